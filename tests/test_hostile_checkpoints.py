"""Hostile and broken checkpoints, generated here: each is refused with an error that names the file, through every
way ovis-lit reads one (evals/run.py's loader, train.py's init_from and resume, scripts/consolidate.py), and no
crafted pickle, remote-code file or symlink ever writes the marker file.

Good copies of each layout load first (test_*_good_*), so a refusal below is the defect's, not a broken fixture's.
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file

from ovis_lit.evaluation.loading import load_for_eval
from ovis_lit.interop.consolidate import load_sharded_model, read_sharded_meta
from ovis_lit.interop.original import load_original
from ovis_lit.interop.original_export import export_original
from ovis_lit.interop.safe_dcp import dcp_load, read_dcp_metadata
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.processor import OvisProcessor
from ovis_lit.processing.tokenizer import byte_level_tokenizer, load_tokenizer
from ovis_lit.training.checkpoints import MODEL_PREFIX, check_resumable, check_resume_strategy, load_model_weights
from ovis_lit.training.strategies import FSDP2Strategy

from .conftest import REPO
from .tiny import tiny_model, tiny_spec

pytestmark = pytest.mark.timeout(60)


class _Payload:
    """Creates a file when unpickled (the marker: it must never exist)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _env(tmp_path: Path) -> dict[str, str]:
    # PROJECT_ROOT (conf/paths: data and outputs): evals/run.py builds its default benchmark's held-out file before
    # it loads (and refuses) the checkpoint, which must not land in the checkout's data/shards
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "hf-mod"),
            "PROJECT_ROOT": str(tmp_path / "project")}


def _run(tmp_path: Path, *args: str, stdin: str = "y\n") -> subprocess.CompletedProcess:
    """A command as a user runs it, with a terminal-like "y" waiting on stdin for any "run this code?" prompt."""
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(tmp_path), input=stdin, capture_output=True,
                          text=True, timeout=110)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "code from a checkpoint ran"


# ------------------------------------------------------------------------------------------------ good layouts


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One tiny model in each layout: sharded (DCP + meta.pt), a Lightning .ckpt, and an original-layout export."""
    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = tiny_model()
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    hparams = {"model": {"spec": tiny_spec(), "pretrained": None}}
    dcp.save({"state_dict": state}, checkpoint_id=root / "sharded", no_dist=True)
    torch.save({"hyper_parameters": hparams, "global_step": 3}, root / "sharded" / "meta.pt")
    torch.save({"state_dict": state, "hyper_parameters": hparams, "global_step": 3}, root / "last.ckpt")
    processor = OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    export_original(model, processor, root / "export", multimodal_max_length=256)
    return {"root": root, "model": model, "sharded": root / "sharded", "ckpt": root / "last.ckpt",
            "export": root / "export"}


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_good_sharded_checkpoint_loads(good):
    assert _same(load_sharded_model(good["sharded"]), good["model"])
    check_resumable(good["sharded"])
    model = tiny_model()
    load_model_weights(model, good["sharded"])
    assert _same(model, good["model"])


def test_the_good_ckpt_and_export_load(good):
    check_resumable(good["ckpt"])
    for source in (good["ckpt"], good["export"]):
        model = tiny_model()
        load_model_weights(model, source)
        assert _same(model, good["model"])


# ------------------------------------------------------------------------------------- sharded (DCP) checkpoints


def _metadata(directory: Path):
    with (directory / ".metadata").open("rb") as f:
        return pickle.load(f)  # the test's own, trusted file


def _write_metadata(directory: Path, value) -> None:
    (directory / ".metadata").write_bytes(pickle.dumps(value))


@pytest.fixture
def crafted_sharded(good, tmp_path, marker):
    """A sharded checkpoint whose .metadata runs code when unpickled by DCP's own reader."""
    ckpt = _copy(good["sharded"], tmp_path / "last.ckpt")
    _write_metadata(ckpt, _Payload(marker))
    return ckpt


REFUSED_INDEX = r"\.metadata: refused: it refers to (io|builtins|_io)\.open"


def test_crafted_metadata_through_the_eval_loader(crafted_sharded):
    with pytest.raises(ValueError, match=REFUSED_INDEX):
        load_for_eval(crafted_sharded, processor=None)


def test_crafted_metadata_through_init_from(crafted_sharded):
    with pytest.raises(ValueError, match=REFUSED_INDEX):
        load_model_weights(tiny_model(), crafted_sharded)


def test_crafted_metadata_through_train_resume_check(crafted_sharded):
    """train.py checks ckpt_path before building anything (run_stage -> check_resumable)."""
    with pytest.raises(ValueError, match=REFUSED_INDEX):
        check_resumable(crafted_sharded)


def test_sharded_checkpoints_resume_only_under_fsdp2strategy(good):
    """Lightning's other strategies (its own FSDP included) read a sharded directory with DCP's unpickling reader."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    for strategy in (DDPStrategy(), FSDPStrategy()):
        with pytest.raises(ValueError, match=r"sharded is a sharded checkpoint: resume it with trainer=fsdp"):
            check_resume_strategy(good["sharded"], strategy)
    check_resume_strategy(good["sharded"], FSDP2Strategy())
    check_resume_strategy(good["ckpt"], DDPStrategy())  # a single file: any strategy, weights-only


def test_crafted_metadata_through_the_fsdp_strategy_resume(crafted_sharded):
    """Lightning's resume under trainer=fsdp calls the strategy's load_checkpoint; ours reads through safe_dcp."""
    with pytest.raises(ValueError, match=REFUSED_INDEX):
        FSDP2Strategy().load_checkpoint(crafted_sharded)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crafted_metadata_through_scripts_consolidate(crafted_sharded, good, tmp_path):
    proc = _run(tmp_path, "scripts/consolidate.py", str(crafted_sharded), "--processor", str(good["export"]),
                "--chat-format", "qwen", "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert re.search(REFUSED_INDEX, proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crafted_metadata_through_lightning_resume(crafted_sharded, tmp_path):
    """A real Lightning fit under FSDP2Strategy (1 CPU process) asked to resume from the crafted directory."""
    proc = subprocess.run([sys.executable, "-m", "tests.fsdp_job", "--strategy", "fsdp", "--devices", "1",
                           "--steps", "1", "--resume", str(crafted_sharded), "--out", str(tmp_path / "job")],
                          cwd=REPO, env=_env(tmp_path), input="y\n", capture_output=True, text=True, timeout=110)
    assert proc.returncode != 0
    assert re.search(REFUSED_INDEX, proc.stderr), proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crafted_metadata_through_evals_run(crafted_sharded, tmp_path):
    proc = _run(tmp_path, "evals/run.py", f"checkpoint={crafted_sharded}", f"output_dir={tmp_path / 'eval'}",
                "progress=false")
    assert proc.returncode != 0
    assert re.search(REFUSED_INDEX, proc.stderr + proc.stdout), (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.parametrize("where", ["../outside.distcp", "/etc/hostname", "sub/__0_0.distcp"])
def test_metadata_pointing_outside_the_directory(good, tmp_path, where):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    shutil.copyfile(ckpt / "__0_0.distcp", tmp_path / "outside.distcp")
    metadata = _metadata(ckpt)
    for info in metadata.storage_data.values():
        info.relative_path = where
    _write_metadata(ckpt, metadata)
    with pytest.raises(ValueError, match=r"\.metadata: refused: .*shard files must lie in the checkpoint directory"):
        load_sharded_model(ckpt)


def test_shard_file_symlinked_outside(good, tmp_path):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    (ckpt / "__0_0.distcp").rename(tmp_path / "elsewhere.distcp")
    (ckpt / "__0_0.distcp").symlink_to(tmp_path / "elsewhere.distcp")
    with pytest.raises(ValueError, match=r"\.metadata: refused: .*outside"):
        load_model_weights(tiny_model(), ckpt)


def test_truncated_metadata(good, tmp_path):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    data = (ckpt / ".metadata").read_bytes()
    (ckpt / ".metadata").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"\.metadata: not a readable checkpoint index"):
        read_sharded_meta(ckpt)


def test_metadata_calling_an_allowed_class_with_nonsense(good, tmp_path):
    """Allowed classes called with arguments they refuse (here the memory-format enum with an unknown value)."""
    import torch.distributed.checkpoint.metadata as m

    class _Nonsense:
        def __reduce__(self):
            return (m._MEM_FORMAT_ENCODING, ("no such format",))

    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    _write_metadata(ckpt, [_Nonsense()])
    with pytest.raises(ValueError, match=r"\.metadata: not a readable checkpoint index \(ValueError"):
        read_dcp_metadata(ckpt)


def test_metadata_that_is_not_an_index(good, tmp_path):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    _write_metadata(ckpt, {"state_dict_metadata": {}, "storage_data": {}})
    with pytest.raises(ValueError, match=r"\.metadata: refused: holds a dict"):
        read_dcp_metadata(ckpt)


def test_truncated_shard(good, tmp_path):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    shard = ckpt / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"\.metadata: refused: .*reads past the end of .*__0_0\.distcp"):
        load_for_eval(ckpt)


def test_pickled_object_inside_a_shard_is_not_run(tmp_path, marker):
    """A non-tensor entry is stored as a torch.save pickle inside the .distcp file; DCP's default planner loads it
    with weights_only=False. Ours loads it weights-only."""
    ckpt = tmp_path / "ckpt"
    dcp.save({"state_dict": {"model.x": torch.ones(2)}, "extra": _Payload(marker)}, checkpoint_id=ckpt, no_dist=True)
    state = {"state_dict": {"model.x": torch.zeros(2)}, "extra": None}
    refused = rf"{re.escape(str(ckpt))}: the sharded checkpoint does not load: .*Weights only"
    with pytest.raises(ValueError, match=refused):
        dcp_load(state, ckpt)


def test_tensor_entry_declared_as_bytes_is_not_unpickled(tmp_path, marker):
    """An index that says a weight is a pickled object, pointing at a pickle payload in the shard."""
    ckpt = tmp_path / "ckpt"
    dcp.save({"state_dict": {"model.x": torch.ones(2)}, "extra": _Payload(marker)}, checkpoint_id=ckpt, no_dist=True)
    metadata = _metadata(ckpt)
    metadata.state_dict_metadata["state_dict.model.x"] = metadata.state_dict_metadata["extra"]
    for index, info in list(metadata.storage_data.items()):
        if index.fqn == "extra":
            metadata.storage_data[type(index)(fqn="state_dict.model.x")] = info
    _write_metadata(ckpt, metadata)
    with pytest.raises(ValueError, match="the sharded checkpoint does not load"):
        dcp_load({"state_dict": {"model.x": torch.zeros(2)}}, ckpt)


def test_crafted_meta_pt(good, tmp_path, marker):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    torch.save({"hyper_parameters": _Payload(marker), "global_step": 1}, ckpt / "meta.pt")
    with pytest.raises(ValueError, match=r"meta\.pt: refused: not loadable as weights only"):
        load_for_eval(ckpt)
    with pytest.raises(ValueError, match=r"meta\.pt: refused"):
        FSDP2Strategy().load_checkpoint(ckpt)  # the index is fine: meta.pt is checked next, before any state


def test_sharded_weights_of_the_wrong_shape(good, tmp_path):
    ckpt = _copy(good["sharded"], tmp_path / "ckpt")
    model = tiny_model(vocab=32)  # a visual vocabulary of another size
    with pytest.raises(ValueError, match=rf"{re.escape(str(ckpt))}: the sharded checkpoint does not load"):
        load_model_weights(model, ckpt)


# ----------------------------------------------------------------------------------------- Lightning .ckpt files


def test_ckpt_with_a_reduce_payload(good, tmp_path, marker):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": _Payload(marker)}}, path)
    for load in (load_for_eval, check_resumable, lambda p: load_model_weights(tiny_model(), p)):
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: refused: not loadable as weights only"):
            load(path)


def test_ckpt_that_is_a_plain_pickle(tmp_path, marker):
    path = tmp_path / "last.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: refused"):
        load_for_eval(path)


def test_ckpt_with_weights_of_the_wrong_shape(good, tmp_path):
    ckpt = torch.load(good["ckpt"], weights_only=True)
    ckpt["state_dict"]["model.vte.weight"] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"(?s)last\.ckpt does not fit the model: .*size mismatch"):
        load_for_eval(tmp_path / "last.ckpt")


def test_ckpt_with_missing_weights(good, tmp_path):
    ckpt = torch.load(good["ckpt"], weights_only=True)
    del ckpt["state_dict"]["model.vte.weight"]
    torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"last\.ckpt does not fit the model: missing \['vte\.weight'\]"):
        load_for_eval(tmp_path / "last.ckpt")


def test_ckpt_without_a_state_dict(tmp_path):
    torch.save({"hyper_parameters": {}}, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"last\.ckpt: not a Lightning checkpoint"):
        check_resumable(tmp_path / "last.ckpt")


def test_hydra_config_beside_a_ckpt_cannot_name_code(good, tmp_path, marker):
    """A .ckpt's processor can be rebuilt from the run's .hydra/config.yaml; a _target_ there is a call."""
    run = tmp_path / "run"
    (run / "stage1" / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    _copy(good["ckpt"], run / "stage1" / "checkpoints" / "last.ckpt")
    (run / ".hydra" / "config.yaml").write_text(
        "processor:\n  _target_: ovis_lit.processing.build.crop_processor\n  tokenizer:\n"
        f"    _target_: builtins.open\n    file: {marker}\n    mode: w\n  chat_format: qwen\n"
    )
    with pytest.raises(ValueError, match=r"config\.yaml: refused: _target_ 'builtins\.open'"):
        load_for_eval(run / "stage1" / "checkpoints" / "last.ckpt")
    # the same call hidden behind an interpolation to a node outside `processor`
    (run / ".hydra" / "config.yaml").write_text(
        f"evil:\n  _target_: builtins.open\n  file: {marker}\n  mode: w\n"
        "processor:\n  _target_: ovis_lit.processing.build.crop_processor\n  tokenizer: ${evil}\n"
    )
    with pytest.raises(ValueError, match=r"config\.yaml: refused: _target_ 'builtins\.open'"):
        load_for_eval(run / "stage1" / "checkpoints" / "last.ckpt")
    # or as the processor itself
    (run / ".hydra" / "config.yaml").write_text(f"processor:\n  _target_: builtins.open\n  file: {marker}\n")
    with pytest.raises(ValueError, match=r"config\.yaml: refused: _target_ 'builtins\.open'"):
        load_for_eval(run / "stage1" / "checkpoints" / "last.ckpt")


# ----------------------------------------------------------------------------- remote code (trust_remote_code)


def _remote_code_dir(directory: Path, marker: Path, config_name: str, config: dict) -> Path:
    directory.mkdir(parents=True)
    (directory / config_name).write_text(json.dumps(config))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for module in ("evil", "configuration_evil", "modeling_evil", "tokenization_evil"):
        (directory / f"{module}.py").write_text(code)
    save_file({"x": torch.zeros(1)}, directory / "model.safetensors")  # so only the code stands in the way
    return directory


def _ckpt_with_llm_at(path: Path, llm_dir: Path) -> Path:
    spec = tiny_spec()
    spec["llm"] = {"pretrained": str(llm_dir)}
    torch.save({"state_dict": {}, "hyper_parameters": {"model": {"spec": spec, "pretrained": None}}}, path)
    return path


AUTO_MAP_LLM = {"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                   "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}


def test_ckpt_pointing_the_llm_at_custom_code(tmp_path, marker):
    llm = _remote_code_dir(tmp_path / "llm", marker, "config.json", AUTO_MAP_LLM)
    ckpt = _ckpt_with_llm_at(tmp_path / "last.ckpt", llm)
    with pytest.raises(ValueError, match=r"llm/config\.json: refused: auto_map .* never runs code"):
        load_for_eval(ckpt)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_custom_code_prompt_is_never_reached_even_when_stdin_says_yes(tmp_path, marker):
    """transformers asks "run custom code? [y/N]" on stdin when trust_remote_code is not given; a "y" there
    would run llm/modeling_evil.py. With the check and trust_remote_code=False the answer is never read."""
    llm = _remote_code_dir(tmp_path / "llm", marker, "config.json", AUTO_MAP_LLM)
    ckpt = _ckpt_with_llm_at(tmp_path / "last.ckpt", llm)
    proc = _run(tmp_path, "-c", "import sys; from ovis_lit.evaluation.loading import load_for_eval; "
                "load_for_eval(sys.argv[1])", str(ckpt), stdin="y\ny\ny\n")
    assert proc.returncode != 0
    assert "config.json: refused: auto_map" in proc.stderr, proc.stderr[-3000:]
    assert "[y/N]" not in proc.stdout + proc.stderr


def test_transformers_itself_is_told_not_to_run_code(tmp_path, marker):
    """Behind the auto_map check, the load itself passes trust_remote_code=False (a native model_type with an
    auto_map loads transformers' class; the directory's code is ignored)."""
    from ovis_lit.model.build import LLMSpec, build_llm

    llm_dir = tmp_path / "llm"
    tiny_model().llm.save_pretrained(llm_dir)
    config = json.loads((llm_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    _remote_code_dir(tmp_path / "unused", marker, "x.json", {})
    (llm_dir / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (llm_dir / "config.json").write_text(json.dumps(config))
    llm = build_llm(LLMSpec(pretrained=str(llm_dir)))
    assert type(llm).__module__.startswith("transformers.")


def test_tokenizer_config_with_custom_code(tmp_path, marker):
    tok = _remote_code_dir(tmp_path / "tok", marker, "tokenizer_config.json",
                           {"tokenizer_class": "EvilTokenizer",
                            "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}})
    with pytest.raises(ValueError, match=r"tok/tokenizer_config\.json: refused: auto_map"):
        load_tokenizer(tok)


TRANSFORMERS_LOAD = re.compile(r"\b([\w.]+)\.(from_pretrained|from_config)\(")
OWN_LOADERS = {"OvisProcessor", "NativeOvisProcessor",  # ovis-lit's classes: their from_pretrained calls the loaders scanned here
               "LoraSettings",  # ovis-lit's own settings, built from a config dict
               "LoraConfig"}  # peft's adapter config: JSON from a folder already checked to be local (model/lora.py)


def test_every_transformers_load_says_trust_remote_code_false():
    """So that a load added later cannot forget it (and reach transformers' interactive prompt)."""
    from .test_bad_data import _call_text

    files = [*REPO.glob("ovis_lit/**/*.py"), *REPO.glob("evals/*.py"), *REPO.glob("scripts/*.py"),
             *REPO.glob("data/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("*.py")]
    problems, seen = [], 0
    for path in files:
        source = path.read_text()
        for match in TRANSFORMERS_LOAD.finditer(source):
            if match.group(1).split(".")[-1] in OWN_LOADERS:
                continue
            seen += 1
            call = _call_text(source, match.end() - 1)
            if not re.search(r"trust_remote_code\s*=\s*False", call):
                problems.append(f"{path.relative_to(REPO)}: {match.group(0)}{call[1:60]}")
    assert seen >= 8 and not problems, problems


# ------------------------------------------------------------------------------ original-layout directories


def test_pickled_weights_only_directory(good, tmp_path, marker):
    d = tmp_path / "ovis"
    d.mkdir()
    shutil.copyfile(good["export"] / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    torch.save({"w": _Payload(marker)}, d / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"only safetensors checkpoints load; pickled weights \(model\.pt, "
                                                r"pytorch_model\.bin\) are never read"):
        load_for_eval(d)


def test_weight_index_pointing_outside(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "model.safetensors").rename(tmp_path / "outside.safetensors")
    keys = load_file(tmp_path / "outside.safetensors").keys()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: "../outside.safetensors" for k in keys}}))
    with pytest.raises(ValueError, match=r"refused file name '\.\./outside\.safetensors'"):
        load_for_eval(d)


def test_weight_index_naming_a_pickle(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"vte.weight": "pytorch_model.bin"}}))
    with pytest.raises(ValueError, match=r"index\.json: refused: names files other than safetensors"):
        load_original(d)


def test_symlinked_weight_file_pointing_outside(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "model.safetensors").rename(tmp_path / "outside.safetensors")
    (d / "model.safetensors").symlink_to(tmp_path / "outside.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: refused: it resolves to .*outside"):
        load_for_eval(d)


def test_hub_cache_snapshot_symlinks_are_followed(good, tmp_path):
    """The Hugging Face cache's own layout: snapshots/<rev>/model.safetensors -> ../../blobs/<hash>."""
    repo = tmp_path / "models--org--tiny"
    snapshot = _copy(good["export"], repo / "snapshots" / "abc123")
    (repo / "blobs").mkdir()
    (snapshot / "model.safetensors").rename(repo / "blobs" / "0f1e2d")
    (snapshot / "model.safetensors").symlink_to("../../blobs/0f1e2d")
    assert _same(load_original(snapshot)[0], good["model"])


def test_truncated_safetensors(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        load_for_eval(d)


def test_config_that_is_not_json(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "config.json").write_text("{'model_type': 'ovis',")
    with pytest.raises(ValueError, match=r"config\.json: not valid UTF-8 JSON"):
        load_for_eval(d)


def test_config_that_is_latin1(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "config.json").write_bytes(b'{"model_type": "ovis", "name": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"config\.json: not valid UTF-8 JSON"):
        load_original(d)


def test_config_with_a_byte_order_mark_loads(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "config.json").write_bytes(b"\xef\xbb\xbf" + (d / "config.json").read_bytes())
    assert _same(load_original(d)[0], good["model"])


def test_config_without_the_llm_config(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    config = json.loads((d / "config.json").read_text())
    del config["llm_config"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json has no llm_config object"):
        load_for_eval(d)


def test_export_missing_llm_weights(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    tensors = load_file(d / "model.safetensors")
    dropped = next(k for k in tensors if k.startswith("llm.model.layers.0."))
    del tensors[dropped]
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"lacks weights: \[{re.escape(repr(dropped))}\]"):
        load_for_eval(d)


def test_export_with_weights_of_the_wrong_shape(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    tensors = load_file(d / "model.safetensors")
    key = next(k for k in tensors if k.startswith("llm.model.layers.0.") and k.endswith("q_proj.weight"))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"has weights of the wrong shape: .*{re.escape(key)}"):
        load_for_eval(d)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_export_with_a_visual_head_that_does_not_fit(good, tmp_path, change):
    # The visual head and table are assigned into modules built on the meta device: a missing or extra tensor must
    # be named, not left as a meta tensor or reported as a bare load_state_dict error.
    d = _copy(good["export"], tmp_path / "ovis")
    tensors = load_file(d / "model.safetensors")
    if change == "drop":
        del tensors["visual_tokenizer.head.1.bias"]
    else:
        tensors["visual_tokenizer.head.2.weight"] = torch.zeros(2)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    missing, unexpected = (["1.bias"], []) if change == "drop" else ([], ["2.weight"])
    with pytest.raises(ValueError, match=re.escape(f"visual head weights differ from the layout's; missing {missing}, "
                                                   f"unexpected {unexpected}")):
        load_original(d)


def test_preprocessor_config_without_a_size(good, tmp_path):
    d = _copy(good["export"], tmp_path / "ovis")
    (d / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0, 0, 0]}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: not a usable image-processor config"):
        load_for_eval(d)
