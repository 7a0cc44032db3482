"""VV encoder: tiny random CLIP / SigLIP models built from configs, loaded through the real
``from_pretrained`` path, batching, dtype and device code. CPU only here: the CUDA paths
(bfloat16 default, out-of-memory batch halving) run on CPU with the dtype forced and the
out-of-memory error simulated."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from rag_pipeline.analysis.analyzers.image_embedding import (
    ImageEncoder,
    image_model_spec,
)
from rag_pipeline.errors import ModelError
from rag_pipeline_tests.tiny_models import (
    build_tiny_clip_model,
    build_tiny_sentence_model,
)

KINDS = ("clip", "siglip", "siglip2")
MODEL_CLASS = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model"}
JOINT_DIM = {"clip": 24, "siglip": 32, "siglip2": 32}  # projection_dim 24; SigLIP: hidden 32


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vv_models")


@pytest.fixture(scope="module")
def model_dirs(model_root):
    return {kind: build_tiny_clip_model(model_root / kind, kind) for kind in KINDS}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def encoder(model_dirs, kind):
    return ImageEncoder.load(model_dirs[kind])


def _images() -> list[Image.Image]:
    """Different sizes, aspect ratios and modes, random content (seeded)."""
    rng = np.random.default_rng(7)

    def rgb(h: int, w: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    gray = Image.fromarray(rng.integers(0, 256, (40, 90), dtype=np.uint8))  # mode L
    rgba = Image.fromarray(rng.integers(0, 256, (33, 33, 4), dtype=np.uint8))  # mode RGBA
    return [rgb(50, 80), rgb(32, 32), rgb(120, 40), gray, rgba, rgb(17, 200), rgb(300, 260)]


def _unit_rows(v: np.ndarray) -> None:
    assert v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_loads_each_kind_from_its_directory(encoder, model_dirs, kind):
    import torch

    assert type(encoder._model).__name__ == MODEL_CLASS[kind]
    assert encoder.kind == kind
    assert encoder.device == "cpu" and encoder.dtype == "float32"
    assert {p.dtype for p in encoder._model.parameters()} == {torch.float32}
    assert encoder.dim == JOINT_DIM[kind]
    spec = image_model_spec(model_dirs[kind])
    assert spec.backend == "transformers" and spec.model_id == kind  # the directory's name
    assert spec.dim == encoder.dim
    assert encoder.spec == spec
    assert spec.revision == spec.weights_checksum[:12]
    assert ImageEncoder.load(model_dirs[kind]) is encoder  # cached per process


def test_image_vectors_unit_deterministic_and_batch_independent(encoder):
    images = _images()
    v4 = encoder.encode_images(images, batch_size=4)
    assert v4.shape == (len(images), encoder.dim)
    _unit_rows(v4)
    np.testing.assert_allclose(encoder.encode_images(images, batch_size=4), v4, atol=1e-6)
    v1 = encoder.encode_images(images, batch_size=1)
    np.testing.assert_allclose(v1, v4, atol=1e-5)
    # different pictures, different vectors (no constant or collapsed output)
    sims = v4 @ v4.T
    assert np.max(sims[~np.eye(len(images), dtype=bool)]) < 0.9999
    assert encoder.encode_images([], batch_size=4).shape == (0, encoder.dim)


def test_text_tower_shares_the_image_space(encoder):
    texts = ["a photo of a cat", "Dog", "two people riding bikes on a street " * 10, "ÿ 東京"]
    t = encoder.encode_texts(texts, batch_size=3)
    assert t.shape == (len(texts), encoder.dim)
    _unit_rows(t)
    np.testing.assert_allclose(encoder.encode_texts(texts, batch_size=1), t, atol=1e-5)
    q = encoder.encode_query(texts[0])
    assert q.shape == (encoder.dim,)
    np.testing.assert_allclose(q, t[0], atol=1e-5)
    assert abs(float(t[0] @ t[1])) < 0.9999
    # SigLIP as trained: padded to max_length (pooled at the last position), v1 without a
    # mask; CLIP: padded to the longest text, masked; both truncated to the positions.
    batch = encoder._tokenize(["a cat", "x" * 500])
    width = batch["input_ids"].shape[1]
    assert width == encoder.max_text_tokens
    if encoder.kind == "clip":
        assert "attention_mask" in batch
        assert encoder._tokenize(["a cat"])["input_ids"].shape[1] < encoder.max_text_tokens
    elif encoder.kind == "siglip":
        assert set(batch) == {"input_ids"}
    # text -> image scores are dot products between vectors of the same width
    scores = encoder.encode_images(_images()[:3]) @ q
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 1.0 + 1e-5)


def test_spec_follows_the_weights_and_does_not_load(model_root, model_dirs, monkeypatch):
    import transformers

    def no_loading(*_a, **_k):
        raise AssertionError("image_model_spec must not load the model")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_loading)
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_loading)
    cached = dict(ImageEncoder._cache)
    base = image_model_spec(model_dirs["clip"])
    same = image_model_spec(build_tiny_clip_model(model_root / "clip-seed0-again", "clip"))
    other = image_model_spec(build_tiny_clip_model(model_root / "clip-seed1", "clip", seed=1))
    assert same.weights_checksum == base.weights_checksum  # seeded: the same weights
    assert other.weights_checksum != base.weights_checksum
    assert other.revision != base.revision and other.key != base.key
    assert ImageEncoder._cache == cached


def test_other_weights_give_other_vectors(model_root, model_dirs):
    other = ImageEncoder.load(build_tiny_clip_model(model_root / "clip-seed2", "clip", seed=2))
    base = ImageEncoder.load(model_dirs["clip"])
    images = _images()[:2]
    assert not np.allclose(other.encode_images(images), base.encode_images(images), atol=1e-3)


def test_missing_and_wrong_directories_raise_model_error(tmp_path, model_dirs):
    missing = tmp_path / "nope"
    for call in (image_model_spec, ImageEncoder.load):
        with pytest.raises(ModelError, match="does not exist"):
            call(missing)
    sentence = build_tiny_sentence_model(tmp_path / "minilm")
    with pytest.raises(ModelError, match="not a CLIP/SigLIP"):
        image_model_spec(sentence)
    with pytest.raises(ModelError, match="not a CLIP/SigLIP"):
        ImageEncoder.load(sentence)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        ImageEncoder.load(tmp_path / "empty")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(model_dirs["siglip"], no_weights)
    for p in no_weights.glob("*.safetensors"):
        p.unlink()
    with pytest.raises(ModelError, match="no weight files"):
        ImageEncoder.load(no_weights)


def test_weights_missing_from_the_checkpoint_raise_model_error(tmp_path, model_dirs):
    # transformers itself would only warn and initialise the missing tensor at random.
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(model_dirs["clip"], partial)
    weights = load_file(partial / "model.safetensors")
    del weights["visual_projection.weight"]
    save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    image_model_spec(partial)  # describable: the files are there
    with pytest.raises(ModelError, match="visual_projection.weight"):
        ImageEncoder.load(partial)


def test_bfloat16_override_on_cpu(model_dirs, kind):
    import torch

    f32 = ImageEncoder.load(model_dirs[kind])
    bf16 = ImageEncoder.load(model_dirs[kind], dtype="bf16")
    assert bf16 is not f32  # cached per (directory, device, dtype)
    assert bf16.dtype == "bfloat16"
    assert {p.dtype for p in bf16._model.parameters()} == {torch.bfloat16}
    images = _images()
    v = bf16.encode_images(images, batch_size=3)
    _unit_rows(v)  # float32 numpy whatever the compute dtype
    ref = f32.encode_images(images)
    assert np.min(np.sum(v * ref, axis=1)) > 0.98  # same space, bf16 rounding only
    t = bf16.encode_texts(["a photo of a cat"])
    _unit_rows(t)


def test_device_and_dtype_from_settings(model_dirs, monkeypatch):
    import torch

    from rag_pipeline.settings import Settings

    monkeypatch.setenv("RAG_VV_DTYPE", "bfloat16")
    monkeypatch.setenv("RAG_VV_DEVICE", "cpu")
    s = Settings()
    enc = ImageEncoder.load(model_dirs["clip"], device=s.vv_device, dtype=s.vv_dtype)
    assert (enc.device, enc.dtype) == ("cpu", "bfloat16")
    with pytest.raises(ModelError, match="unsupported dtype"):
        ImageEncoder.load(model_dirs["clip"], dtype="int8")
    with pytest.raises(ModelError, match="unknown torch device"):
        ImageEncoder.load(model_dirs["clip"], device="tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            ImageEncoder.load(model_dirs["clip"], device="cuda")


def test_out_of_memory_halves_the_batch(model_dirs, monkeypatch):
    import torch

    enc = ImageEncoder.load(model_dirs["clip"])
    monkeypatch.setattr(enc, "max_batch", None)  # restored afterwards: the encoder is shared
    images = _images()[:5]
    ref = enc.encode_images(images, batch_size=8)
    real = enc._encode_image_batch
    seen: list[int] = []

    def fits_two(batch):
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    monkeypatch.setattr(enc, "_encode_image_batch", fits_two)
    v = enc.encode_images(images, batch_size=8)
    assert seen == [5, 4, 2, 2, 1]
    np.testing.assert_allclose(v, ref, atol=1e-5)
    assert enc.max_batch == 2
    seen.clear()
    enc.encode_images(images, batch_size=8)  # later calls start from the size that fitted
    assert seen == [2, 2, 1]

    def never_fits(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(enc, "_encode_image_batch", never_fits)
    with pytest.raises(ModelError, match="out of memory .* single image"):
        enc.encode_images(images, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_images(images, batch_size=0)


def test_concurrent_loads_share_one_model(model_root):
    d = build_tiny_clip_model(model_root / "siglip-threads", "siglip", seed=3)
    got: list[ImageEncoder] = []
    start = threading.Barrier(4)

    def load() -> None:
        start.wait()
        got.append(ImageEncoder.load(d))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(e is got[0] for e in got)
