# CPU benchmark stub: the original Ovis2.5 code imports deepspeed at module load but needs none of it without ZeRO.
class _Zero:
    class GatheredParameters:
        def __init__(self, *a, **k): pass
        def __enter__(self): return self
        def __exit__(self, *a): return False
    class Init:
        def __init__(self, *a, **k): pass
        def __enter__(self): return self
        def __exit__(self, *a): return False
zero = _Zero()
