"""The rating study's database: questions, raters, page assignments and ratings, in SQLite.

One file (`paths.ratings_db`, under the storage root) in WAL mode with synchronous=FULL;
every write is one `BEGIN IMMEDIATE` transaction, so a killed server keeps every rating it
acknowledged and two raters can never both take the last slot of a page.

Raters are identified only by an opaque random token in their link; the database keeps
its SHA-256 (the token is long and random, so a fast hash is enough) and a label (`r001`)
used in exports. Nothing here knows about HTTP: `bas.ratings.app` maps the errors below to
status codes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pandas as pd

from bas.errors import BasError, DataError
from bas.ratings.questions import TASKS, Question

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE questions (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,          -- in forms and URLs; says nothing about the question
    task TEXT NOT NULL CHECK (task IN ('prompt', 'identity')),
    scene_id TEXT NOT NULL,
    template_id INTEGER NOT NULL,
    template TEXT NOT NULL,
    subset TEXT NOT NULL,
    subset_size INTEGER NOT NULL,
    seed_index INTEGER NOT NULL,
    prompt_classes TEXT NOT NULL,
    concept_index INTEGER,                   -- identity only
    class_name TEXT                          -- identity only
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,          -- image URL and form field; never the method name
    question_id INTEGER NOT NULL REFERENCES questions(id),
    method TEXT NOT NULL,
    image_path TEXT NOT NULL                 -- relative to the storage root
);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE assignments (                   -- a page handed to a rater; submitted_at set once rated
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    question_id INTEGER NOT NULL REFERENCES questions(id),
    assigned_at REAL NOT NULL,
    submitted_at REAL,
    PRIMARY KEY (rater_id, question_id)
);
CREATE TABLE ratings (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    question_id INTEGER NOT NULL REFERENCES questions(id),
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    position INTEGER NOT NULL,               -- where the image was on the rater's page, from 0
    submitted_at REAL NOT NULL,
    PRIMARY KEY (rater_id, item_id)
);
CREATE INDEX items_by_question ON items(question_id);
CREATE INDEX assignments_by_question ON assignments(question_id);
"""

# Keys of the study spec that fix which questions exist; changing them mid-study would
# silently change the study, so opening the database with other values is refused.
SPEC_KEYS = ("seed", "num_prompt_questions", "num_identity_questions", "methods")


class RatingRefused(BasError):
    """A submission the server will not store; `status` is its HTTP status code."""

    status = 422


class UnknownQuestion(RatingRefused):
    status = 404


class AlreadyRated(RatingRefused):
    status = 409


class QuestionFull(RatingRefused):
    status = 409


@dataclass(frozen=True)
class Rater:
    id: int
    label: str


@dataclass(frozen=True)
class PageItem:
    public_id: str
    position: int


@dataclass(frozen=True)
class Page:
    """A question as one rater sees it: items in that rater's order, no method names."""

    public_id: str
    task: str
    prompt_classes: str
    items: tuple[PageItem, ...]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def connect(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode; writers open their own `BEGIN IMMEDIATE`."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed rating survives a crash or power loss
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken up front so concurrent writers queue instead of racing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _order_key(seed: int, rater_id: int, thing: str | int) -> str:
    """A per-rater random but stable order: the same page looks the same on every reload."""
    return hashlib.sha256(f"{seed}:{rater_id}:{thing}".encode()).hexdigest()


class Study:
    """The study database at `db_path`; `create` fills it, `open` checks it."""

    def __init__(self, db_path: Path, ratings_per_question: int, reservation_minutes: int, seed: int):
        self.db_path = Path(db_path)
        self.ratings_per_question = ratings_per_question
        self.reservation_s = 60.0 * reservation_minutes
        self.seed = seed

    # ------------------------------------------------------------------ creation

    @staticmethod
    def exists(db_path: Path) -> bool:
        if not Path(db_path).is_file():
            return False
        with contextlib.closing(connect(db_path)) as conn:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None

    def create(self, questions: Sequence[Question], spec: Mapping) -> None:
        """Write the schema, `questions` and `spec` in one transaction (all or nothing)."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(connect(self.db_path)) as conn:
            with transaction(conn):
                for statement in re.sub(r"--[^\n]*", "", SCHEMA).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [("schema_version", str(SCHEMA_VERSION)),
                                  ("spec", json.dumps(dict(spec), sort_keys=True))])
                for q in questions:
                    cur = conn.execute(
                        "INSERT INTO questions (public_id, task, scene_id, template_id, template, subset, subset_size,"
                        " seed_index, prompt_classes, concept_index, class_name) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (secrets.token_hex(8), q.task, q.scene_id, q.template_id, q.template, q.subset,
                         q.subset_size, q.seed_index, q.prompt_classes, q.concept_index, q.class_name))
                    conn.executemany(
                        "INSERT INTO items (public_id, question_id, method, image_path) VALUES (?,?,?,?)",
                        [(secrets.token_hex(8), cur.lastrowid, it.method, it.image_path) for it in q.items])

    def check_spec(self, spec: Mapping) -> None:
        """Refuse to go on with a database built from other sampling params."""
        with contextlib.closing(connect(self.db_path)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
        stored = json.loads(row["value"])
        for key in SPEC_KEYS:
            if stored.get(key) != spec.get(key):
                raise DataError(f"{self.db_path}: the study was built with ratings.{key} = {stored.get(key)!r}, "
                                f"params now say {spec.get(key)!r}; restore the param, or move the database "
                                f"away to start a new study")

    # ------------------------------------------------------------------ raters

    def add_raters(self, n: int) -> list[tuple[str, str]]:
        """`n` new raters; returns (label, token) pairs. Only the token's hash is stored."""
        out = []
        with contextlib.closing(connect(self.db_path)) as conn, transaction(conn):
            start = conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
            for i in range(start + 1, start + n + 1):
                token = secrets.token_urlsafe(24)
                label = f"r{i:03d}"
                conn.execute("INSERT INTO raters (label, token_sha256, created_at) VALUES (?, ?, ?)",
                             (label, hash_token(token), time.time()))
                out.append((label, token))
        return out

    def rater(self, token: str) -> Rater | None:
        with contextlib.closing(connect(self.db_path)) as conn:
            row = conn.execute("SELECT id, label FROM raters WHERE token_sha256 = ?", (hash_token(token),)).fetchone()
        return Rater(row["id"], row["label"]) if row else None

    # ------------------------------------------------------------------ pages

    def _engaged_by_others(self, conn: sqlite3.Connection, question_id: int, rater_id: int, now: float) -> int:
        """Other raters who rated this page or hold an unexpired assignment of it."""
        return conn.execute(
            "SELECT COUNT(*) FROM assignments WHERE question_id = ? AND rater_id != ?"
            " AND (submitted_at IS NOT NULL OR assigned_at > ?)",
            (question_id, rater_id, now - self.reservation_s)).fetchone()[0]

    def next_page(self, rater: Rater, task: str, now: float | None = None) -> Page | None:
        """The page `rater` should answer next in `task`, reserved for them; None when done.

        A page the rater was given and has not answered comes back first (they can stop and
        return). Otherwise they get a page they have not seen that fewer than
        `ratings_per_question` other raters rated or hold: the least-engaged first, so every
        page gets its first rating before any gets a second, ties in a per-rater random order.
        """
        if task not in TASKS:
            raise UnknownQuestion(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
        now = time.time() if now is None else now
        with contextlib.closing(connect(self.db_path)) as conn, transaction(conn):
            pending = conn.execute(
                "SELECT a.question_id FROM assignments a JOIN questions q ON q.id = a.question_id"
                " WHERE a.rater_id = ? AND q.task = ? AND a.submitted_at IS NULL ORDER BY a.assigned_at",
                (rater.id, task)).fetchall()
            chosen = None
            for row in pending:
                if chosen is None and self._engaged_by_others(conn, row["question_id"], rater.id, now) \
                        < self.ratings_per_question:
                    chosen = row["question_id"]
                else:  # its slots went to others while this rater was away, or a stray extra
                    conn.execute("DELETE FROM assignments WHERE rater_id = ? AND question_id = ?",
                                 (rater.id, row["question_id"]))
            if chosen is None:
                open_pages = conn.execute(
                    "SELECT q.id, (SELECT COUNT(*) FROM assignments a WHERE a.question_id = q.id"
                    "   AND (a.submitted_at IS NOT NULL OR a.assigned_at > ?)) AS engaged"
                    " FROM questions q WHERE q.task = ?"
                    " AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.question_id = q.id AND a.rater_id = ?)",
                    (now - self.reservation_s, task, rater.id)).fetchall()
                open_pages = [r for r in open_pages if r["engaged"] < self.ratings_per_question]
                if not open_pages:
                    return None
                chosen = min(open_pages, key=lambda r: (r["engaged"], _order_key(self.seed, rater.id, r["id"])))["id"]
            # (Re)start the reservation clock: the rater is looking at the page now.
            conn.execute("INSERT INTO assignments (rater_id, question_id, assigned_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (rater_id, question_id) DO UPDATE SET assigned_at = excluded.assigned_at",
                         (rater.id, chosen, now))
            return self._page(conn, chosen, rater)

    def _page(self, conn: sqlite3.Connection, question_id: int, rater: Rater) -> Page:
        q = conn.execute("SELECT public_id, task, prompt_classes FROM questions WHERE id = ?",
                         (question_id,)).fetchone()
        items = conn.execute("SELECT id, public_id FROM items WHERE question_id = ?", (question_id,)).fetchall()
        ordered = sorted(items, key=lambda r: _order_key(self.seed, rater.id, f"item{r['id']}"))
        return Page(q["public_id"], q["task"], q["prompt_classes"],
                    tuple(PageItem(r["public_id"], pos) for pos, r in enumerate(ordered)))

    def submit(self, rater: Rater, task: str, question_public_id: str, ratings: Mapping[str, str],
               now: float | None = None) -> None:
        """Store one page's ratings ({item public id: "1".."5"}) in one transaction.

        Refused: an unknown question or one of another task (404), a page this rater already
        rated (409, a replay), a missing, extra or out-of-range rating (422), a page that got
        its `ratings_per_question` raters meanwhile (409).
        """
        now = time.time() if now is None else now
        with contextlib.closing(connect(self.db_path)) as conn, transaction(conn):
            q = conn.execute("SELECT id, task FROM questions WHERE public_id = ?", (question_public_id,)).fetchone()
            if q is None or q["task"] != task:
                raise UnknownQuestion(f"Unknown question {question_public_id!r}: it is not part of this "
                                      f"study's {task} task. Please open your link again.")
            done = conn.execute("SELECT submitted_at FROM assignments WHERE rater_id = ? AND question_id = ?",
                                (rater.id, q["id"])).fetchone()
            if done is not None and done["submitted_at"] is not None:
                raise AlreadyRated("You have already rated this question; each question is rated once per "
                                   "rater, so this repeated submission was not stored.")
            page = self._page(conn, q["id"], rater)
            values = _validated(page, ratings)
            if self._engaged_by_others(conn, q["id"], rater.id, now) >= self.ratings_per_question:
                raise QuestionFull("This question already has all the ratings it needs (your reservation ran out "
                                   "and other raters took it). Nothing was stored; please continue with the next one.")
            conn.execute("INSERT INTO assignments (rater_id, question_id, assigned_at, submitted_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (rater_id, question_id)"
                         " DO UPDATE SET submitted_at = excluded.submitted_at", (rater.id, q["id"], now, now))
            item_ids = dict(conn.execute("SELECT public_id, id FROM items WHERE question_id = ?", (q["id"],)).fetchall())
            conn.executemany(
                "INSERT INTO ratings (rater_id, item_id, question_id, rating, position, submitted_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(rater.id, item_ids[it.public_id], q["id"], values[it.public_id], it.position, now)
                 for it in page.items])

    # ------------------------------------------------------------------ reading

    def progress(self, rater: Rater) -> dict[str, dict[str, int]]:
        """Per task: pages this rater rated, and pages in the study."""
        with contextlib.closing(connect(self.db_path)) as conn:
            out = {}
            for task in TASKS:
                total = conn.execute("SELECT COUNT(*) FROM questions WHERE task = ?", (task,)).fetchone()[0]
                done = conn.execute(
                    "SELECT COUNT(*) FROM assignments a JOIN questions q ON q.id = a.question_id"
                    " WHERE a.rater_id = ? AND q.task = ? AND a.submitted_at IS NOT NULL", (rater.id, task)).fetchone()[0]
                out[task] = {"rated": done, "total": total}
        return out

    def summary(self) -> dict[str, dict[str, int]]:
        """Per task: pages, pages with all their ratings, and ratings stored."""
        with contextlib.closing(connect(self.db_path)) as conn:
            out = {}
            for task in TASKS:
                rows = conn.execute(
                    "SELECT q.id, (SELECT COUNT(*) FROM assignments a WHERE a.question_id = q.id"
                    " AND a.submitted_at IS NOT NULL) AS raters FROM questions q WHERE q.task = ?", (task,)).fetchall()
                ratings = conn.execute("SELECT COUNT(*) FROM ratings r JOIN questions q ON q.id = r.question_id"
                                       " WHERE q.task = ?", (task,)).fetchone()[0]
                out[task] = {"pages": len(rows), "ratings": ratings,
                             "complete_pages": sum(r["raters"] >= self.ratings_per_question for r in rows)}
            out["raters"] = {"invited": conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0]}
        return out

    def item_image(self, item_public_id: str) -> str | None:
        """The image path (relative to the storage root) behind an item's public id."""
        with contextlib.closing(connect(self.db_path)) as conn:
            row = conn.execute("SELECT image_path FROM items WHERE public_id = ?", (item_public_id,)).fetchone()
        return row["image_path"] if row else None

    def identity_concept(self, question_public_id: str) -> tuple[str, int] | None:
        """(scene id, concept index) of an identity question."""
        with contextlib.closing(connect(self.db_path)) as conn:
            row = conn.execute("SELECT scene_id, concept_index FROM questions WHERE public_id = ? AND task = 'identity'",
                               (question_public_id,)).fetchone()
        return (row["scene_id"], row["concept_index"]) if row else None

    def ratings_frame(self) -> pd.DataFrame:
        """Every stored rating, one row per (rater, image): see RATINGS_COLUMNS."""
        with contextlib.closing(connect(self.db_path)) as conn:
            rows = conn.execute(
                "SELECT rt.label AS rater, q.task, q.public_id AS question, i.method, q.scene_id, q.template_id,"
                " q.template, q.subset, q.subset_size, q.seed_index, q.prompt_classes, q.concept_index, q.class_name,"
                " i.image_path, r.rating, r.position, r.submitted_at"
                " FROM ratings r JOIN raters rt ON rt.id = r.rater_id JOIN items i ON i.id = r.item_id"
                " JOIN questions q ON q.id = r.question_id ORDER BY r.submitted_at, rt.label, r.position").fetchall()
        df = pd.DataFrame([dict(r) for r in rows], columns=[c for c, _ in RATINGS_COLUMNS])
        df["submitted_at"] = pd.to_datetime(df["submitted_at"].astype("float64"), unit="s", utc=True)
        return df.astype(dict(RATINGS_COLUMNS))


# The export's columns (`bas rate export`, and what bas.ratings.analysis reads).
RATINGS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rater", "string"),            # anonymous label, r001...
    ("task", "string"),             # prompt | identity
    ("question", "string"),         # the page's public id
    ("method", "string"),
    ("scene_id", "string"),
    ("template_id", "int64"),
    ("template", "string"),
    ("subset", "string"),
    ("subset_size", "int64"),
    ("seed_index", "int64"),
    ("prompt_classes", "string"),   # the prompt raters saw (prompt task)
    ("concept_index", "Int64"),     # the concept rated (identity task); null for prompt
    ("class_name", "string"),       # its class name; null for prompt
    ("image_path", "string"),       # relative to the storage root
    ("rating", "int64"),            # 1-5
    ("position", "int64"),          # place of the image on the rater's page, from 0
    ("submitted_at", "datetime64[ns, UTC]"),
)


_RATING = re.compile(r"[1-5]")


def _validated(page: Page, ratings: Mapping[str, str]) -> dict[str, int]:
    """Each item's rating as an int 1..5, or RatingRefused saying which image is wrong."""
    expected = {it.public_id: it.position for it in page.items}
    extra = sorted(set(ratings) - set(expected))
    if extra:
        raise RatingRefused(f"The form rates an image that is not on this page ({extra[0]!r}); nothing was stored.")
    values = {}
    for public_id, position in expected.items():
        raw = ratings.get(public_id)
        if raw is None or str(raw).strip() == "":
            raise RatingRefused(f"Image {position + 1} has no rating; please rate every image from 1 to 5.")
        text = str(raw).strip()
        if not _RATING.fullmatch(text):
            raise RatingRefused(f"The rating of image {position + 1} must be a whole number from 1 to 5, "
                                f"got {text[:20]!r}; nothing was stored.")
        values[public_id] = int(text)
    return values
