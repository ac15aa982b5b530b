import numpy as np

from experiments.offline_corpus import build_corpus, source_roots


def test_files_are_deduplicated_and_split_by_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    texts = [f"x = {i}\n".encode() * 20 for i in range(300)]
    for i, t in enumerate(texts):
        (tmp_path / "a" / f"m{i:03}.py").write_bytes(t)
    (tmp_path / "b" / "copy.py").write_bytes(texts[0])  # the same file installed twice
    (tmp_path / "b" / "notes.txt").write_text("not python")
    corpus = build_corpus(roots=[tmp_path / "a", tmp_path / "b"])
    s = corpus.stats
    assert s["files"] == 300 and s["duplicate_files"] == 1
    assert s["duplicate_bytes"] == len(texts[0])
    assert s["bytes"] == sum(len(t) for t in texts)
    # Every file lands in one split, with two newlines after it.
    assert s["train_tokens"] + s["validation_tokens"] == s["bytes"] + 2 * 300
    assert 0 < s["validation_tokens"] < s["train_tokens"]
    again = build_corpus(roots=[tmp_path / "a", tmp_path / "b"])
    np.testing.assert_array_equal(again.validation, corpus.validation)
    capped = build_corpus(max_bytes=1000, roots=[tmp_path / "a"])
    n = capped.stats["files"]  # m000.py ... in sorted order
    assert capped.stats["bytes"] == sum(len(t) for t in texts[:n]) >= 1000
    assert capped.validation.size > 0
    # It stops at the first file that meets both: the cap, and a held-out file.
    last_alone_held_out = capped.validation.size == len(texts[n - 1]) + 2
    assert sum(len(t) for t in texts[: n - 1]) < 1000 or last_alone_held_out


def test_source_roots_hold_python_source():
    roots = source_roots()
    assert roots and any((root / "os.py").is_file() for root in roots)
