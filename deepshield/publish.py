"""``python -m deepshield publish``: the shipped weights as a Hugging Face Hub model repo, and the app as a Space.

The model repo holds what ``load_detector`` reads from the Hub cache (``WEIGHTS_NAME`` at its top level) and the
model card (``weights/README.md``, with the Hub's front matter). The Space holds the app, the package, the
examples and the weights. ``--dry-run`` lists every file, where it would go, its size and whether Git LFS
carries it, and sends nothing. The token is huggingface_hub's usual one (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from .weights import WEIGHTS_NAME

ROOT = Path(__file__).resolve().parent.parent
# Files the Hub stores in Git LFS whatever .gitattributes says (it refuses larger plain files).
LFS_SIZE = 10 * 2**20
# (repo-relative source, path in the model repo)
_CURVES = [f"{Path(WEIGHTS_NAME).stem}.curves.{ext}" for ext in ("png", "csv")] + ["sbi_examples.jpg"]  # the card's pictures
MODEL_FILES = ((f"weights/{WEIGHTS_NAME}", WEIGHTS_NAME), ("weights/README.md", "README.md"),
               *((f"weights/{name}", name) for name in _CURVES), ("LICENSE", "LICENSE"))
# What the Space needs to run `python app.py` (paths are kept; globs are expanded in order).
SPACE_FILES = ("README.md", "app.py", "requirements.txt", "LICENSE", ".gitattributes", "deepshield/*.py",
               "examples/*", f"weights/{WEIGHTS_NAME}", "weights/README.md")


@dataclass(frozen=True)
class Upload:
    """One file of a publish: where it comes from and where it goes."""

    local: Path
    repo_type: str  # "model" or "space"
    repo_id: str
    path_in_repo: str
    size: int
    lfs: bool


def lfs_patterns(gitattributes: Path) -> list[str]:
    """The patterns that ``gitattributes`` sends through Git LFS (``filter=lfs``)."""
    lines = gitattributes.read_text().splitlines() if gitattributes.is_file() else []
    return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]


def carried_by_lfs(path_in_repo: str, size: int, patterns: list[str]) -> bool:
    """Whether the Hub stores the file in LFS: over ``LFS_SIZE``, or matched by a pattern (a pattern without a
    slash matches the file name anywhere, as in .gitattributes)."""
    name = path_in_repo.rsplit("/", 1)[-1]
    return size > LFS_SIZE or any(fnmatch.fnmatch(path_in_repo if "/" in p else name, p) for p in patterns)


def plan(model_repo: str, space_repo: str | None = None, root: Path = ROOT) -> list[Upload]:
    """Every file of the publish. Raises: FileNotFoundError naming a file the repo should have but lacks."""
    patterns = lfs_patterns(root / ".gitattributes")
    pairs = [("model", model_repo, root / source, target) for source, target in MODEL_FILES]
    if space_repo:
        pairs += [("space", space_repo, path, path.relative_to(root).as_posix()) for path in _space_files(root)]
    missing = [str(local) for _, _, local, _ in pairs if not local.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot publish: missing {', '.join(missing)}")
    return [Upload(local, kind, repo, target, local.stat().st_size, carried_by_lfs(target, local.stat().st_size, patterns))
            for kind, repo, local, target in pairs]


def _space_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in SPACE_FILES:
        matches = sorted(p for p in root.glob(pattern) if p.is_file()) if "*" in pattern else [root / pattern]
        found += [p for p in matches if p not in found]
    return found


def describe(uploads: list[Upload]) -> str:
    """One line per file: destination, size, LFS or not; then the totals."""
    lines = [f"{u.repo_type:5} {u.repo_id}:{u.path_in_repo:<40} {u.size:>11,} B  {'LFS' if u.lfs else 'git'}  <- "
             f"{u.local}" for u in uploads]
    total = sum(u.size for u in uploads)
    return "\n".join(lines + [f"{len(uploads)} files, {total:,} bytes, {sum(u.lfs for u in uploads)} through LFS"])


def publish(uploads: list[Upload], token: str | None = None) -> None:
    """Create the repos (if needed) and upload each one's files in a single commit."""
    from huggingface_hub import CommitOperationAdd, HfApi  # network code: only when really publishing

    api = HfApi(token=token)
    for repo_type, repo_id in dict.fromkeys((u.repo_type, u.repo_id) for u in uploads):
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, space_sdk="gradio" if repo_type == "space" else None)
        operations = [CommitOperationAdd(u.path_in_repo, u.local) for u in uploads if u.repo_id == repo_id]
        api.create_commit(repo_id, operations, commit_message="Publish DeepShield", repo_type=repo_type)
        print(f"published {len(operations)} files to {repo_type} {repo_id}")
