"""Tiny random-weight models for tests (seconds on a CPU)."""

from ovis_lit.model.build import build_ovis

VISION = {
    "siglip_vision_model": dict(image_size=42, patch_size=14),
    "clip_vision_model": dict(image_size=42, patch_size=14),
    "aimv2_vision_model": dict(image_size=42, patch_size=14),
    "siglip2_vision_model": dict(num_patches=9, patch_size=14),
}
LLMS = {
    "qwen2": dict(model_type="qwen2", vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False),
    "gemma2": dict(model_type="gemma2", vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=8,
                   max_position_embeddings=512, query_pre_attn_scalar=8),
    "llama": dict(model_type="llama", vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
}


def tiny_spec(llm="qwen2", backbone="siglip_vision_model", vocab=64, hidden_stride=2, **overrides):
    spec = {
        "backbone": {
            "model_type": backbone,
            "config": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           **VISION[backbone]),
        },
        "llm": {"config": dict(LLMS[llm])},
        "visual_vocab_size": vocab,
        "hidden_stride": hidden_stride,
    }
    spec.update(overrides)
    return spec


def tiny_model(**kw):
    return build_ovis(tiny_spec(**kw))
