"""Training data: the bundled BBC News corpus, participants' own files, seeded splits.

Bad data must be rejected with a message naming the problem *before* any
Flower process starts (checked through FlowerDeployment.add_participant).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from collab.errors import BadInput, NotFound
from collab.fl.data import (
    Dataset,
    dirichlet_split,
    iid_split,
    load_bbc_news,
    load_user_data,
    take,
    take_and_rest,
    train_test_split,
)
from collab.fl.deployment import FlowerDeployment

CLASSES = ("business", "entertainment", "politics", "sports", "tech")


@pytest.fixture(scope="module")
def bbc() -> Dataset:
    return load_bbc_news()


def test_bbc_news_has_2225_articles_in_5_classes(bbc: Dataset) -> None:
    assert len(bbc) == 2225
    assert bbc.classes == CLASSES
    counts = bbc.class_counts()
    assert sum(counts.values()) == 2225 and min(counts.values()) > 300
    assert all(t.strip() for t in bbc.texts)


def test_folder_csv_and_jsonl_load_the_same_examples(tmp_path: Path) -> None:
    rows = [("stocks fell sharply", "business"), ("the striker scored twice", "sports"), ("new phone chip", "tech")]
    for text, label in rows:
        (tmp_path / "dir" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / label / f"{len(text)}.txt").write_text(text)
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    loaded = [load_user_data(tmp_path / name) for name in ("dir", "d.csv", "d.jsonl")]
    for data in loaded:
        assert data.classes == ("business", "sports", "tech")
        assert sorted(zip(data.texts, (data.classes[y] for y in data.labels))) == sorted(rows)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n', "bad.jsonl:2: invalid JSON"),
        ("nolabel.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', "nolabel.jsonl:2: label is missing"),
        ("empty.jsonl", '{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n', "text is missing or empty"),
        ("list.jsonl", '["a", "x"]\n["b", "y"]\n', "must be an object"),
        ("one.jsonl", '{"text": "a", "label": "x"}\n', "at least 2 labelled examples"),
        ("noheader.csv", "a,x\nb,y\n", "needs a header with 'text' and 'label'"),
        ("ragged.csv", "text,label\na,x\nb,y,extra\n", "ragged.csv:3: wrong number of columns"),
        ("data.txt", "hello", "unsupported data format .txt"),
        ("latin.csv", b"text,label\n\xff\xfe,x\n", "not a readable UTF-8 CSV"),
    ],
)
def test_malformed_user_data_is_rejected_with_its_location(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BadInput, match=message):
        load_user_data(path)


def test_folder_with_stray_files_or_binary_content_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "a" / "sports").mkdir(parents=True)
    (tmp_path / "a" / "sports" / "1.txt").write_text("goal")
    (tmp_path / "a" / "readme.txt").write_text("not in a class folder")
    with pytest.raises(BadInput, match="files outside a class folder"):
        load_user_data(tmp_path / "a")
    (tmp_path / "b" / "tech").mkdir(parents=True)
    (tmp_path / "b" / "tech" / "1.bin").write_bytes(b"\x00\x01")
    with pytest.raises(BadInput, match="binary file"):
        load_user_data(tmp_path / "b")
    with pytest.raises(NotFound):
        load_user_data(tmp_path / "missing")


def test_labels_outside_the_rounds_classes_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "sports"}\n{"text": "b", "label": "weather"}\n')
    data = load_user_data(path)
    with pytest.raises(BadInput, match="weather"):
        data.with_classes(CLASSES)
    ok = load_user_data(path).subset([0]).with_classes(CLASSES)
    assert ok.classes == CLASSES and ok.labels == (CLASSES.index("sports"),)


def test_bad_data_is_rejected_before_any_flower_process_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    deployment = FlowerDeployment(tmp_path / "orch")
    with pytest.raises(BadInput, match="invalid JSON"):
        deployment.add_participant("p0", tmp_path / "p0", bad)
    assert deployment.processes == {}
    assert not (tmp_path / "p0").exists()


def test_iid_split_partitions_every_example_once_and_is_seeded(bbc: Dataset) -> None:
    data = take(bbc, 300, seed=1)
    parts = iid_split(data, 3, seed=7)
    assert sorted(len(p) for p in parts) == [100, 100, 100]
    texts = [t for p in parts for t in p.texts]
    assert sorted(texts) == sorted(data.texts)
    assert [p.texts for p in iid_split(data, 3, seed=7)] == [p.texts for p in parts]
    assert [p.texts for p in iid_split(data, 3, seed=8)] != [p.texts for p in parts]
    for p in parts:  # IID: every shard sees every class
        assert set(p.labels) == set(range(5))


def test_take_and_rest_splits_a_set_into_the_sample_and_everything_else(bbc: Dataset) -> None:
    _, test = train_test_split(bbc, 0.2, seed=0)
    tuning, held_out = take_and_rest(test, 200, seed=5)
    assert tuning == take(test, 200, seed=5)  # the sample is take's
    assert len(tuning) + len(held_out) == len(test) and len(held_out) == len(test) - 200
    pairs = Counter(zip(test.texts, test.labels))
    assert Counter(zip(tuning.texts, tuning.labels)) + Counter(zip(held_out.texts, held_out.labels)) == pairs
    assert take_and_rest(test, len(test), seed=5) == (test, test.subset([]))


def test_dirichlet_split_is_skewed_for_small_alpha_and_balanced_for_large(bbc: Dataset) -> None:
    data = take(bbc, 500, seed=2)

    def skew(parts: list[Dataset]) -> float:
        # mean over shards of the largest class share
        return sum(max(Counter(p.labels).values()) / len(p) for p in parts) / len(parts)

    non_iid = dirichlet_split(data, 3, alpha=0.1, seed=3)
    near_iid = dirichlet_split(data, 3, alpha=100.0, seed=3)
    for parts in (non_iid, near_iid):
        assert all(len(p) > 0 for p in parts)
        assert sorted(t for p in parts for t in p.texts) == sorted(data.texts)
    assert skew(non_iid) > 0.5 > skew(near_iid)
    assert [p.texts for p in dirichlet_split(data, 3, alpha=0.1, seed=3)] == [p.texts for p in non_iid]
    with pytest.raises(BadInput):
        dirichlet_split(data, 3, alpha=0.0, seed=3)


def test_train_test_split_is_stratified_disjoint_and_seeded(bbc: Dataset) -> None:
    train, test = train_test_split(bbc, 0.2, seed=0)
    assert len(train) + len(test) == len(bbc)
    assert not set(train.texts) & set(test.texts) or len(set(bbc.texts)) < len(bbc)
    assert abs(len(test) - 445) <= 5
    assert train_test_split(bbc, 0.2, seed=0)[1].texts == test.texts
    with pytest.raises(BadInput):
        train_test_split(bbc, 1.5, seed=0)
