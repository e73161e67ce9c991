"""A Hugging Face Hub cache written by hand, so Hub-id loading is tested offline (HF_HUB_OFFLINE=1)."""
import shutil
from pathlib import Path

#: Any 40-hex commit id: offline, huggingface_hub resolves ``refs/main`` to this snapshot.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(cache_dir, repo_id: str, folder) -> Path:
    """Copy ``folder``'s files into ``cache_dir`` as the cached snapshot of model repo ``repo_id``."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for f in Path(folder).iterdir():
        shutil.copy(f, snapshot / f.name)
    return snapshot
