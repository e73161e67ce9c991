"""README's "Use with timm / the Hub" section runs as written: its python blocks, in order, in a fresh
interpreter in an empty folder, offline (the Hub repo it names is put in a local Hub cache first)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Use with timm / the Hub"

pytest.importorskip("timm", reason="timm is not installed (pip install 'yyfast[timm]'; CI installs it)")


def section_python_blocks(readme: str):
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    text = readme[start:end if end >= 0 else len(readme)]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_section_runs(tmp_path):
    import yyfast
    from hub_cache import put_in_hub_cache

    blocks = section_python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "the section lost its python blocks"
    code = "\n".join(blocks)
    for repo_id in sorted(set(re.findall(r'"(?:hf-hub:)?([\w-]+/[\w.-]+)"', code))):
        if not (tmp_path / repo_id).exists():  # a Hub id, not a folder the blocks write
            saved = tmp_path / "hub-source"
            yyfast.create_model("yynet_small_64", backend="reference", num_classes=10).save_pretrained(saved)
            put_in_hub_cache(tmp_path / "hub-cache", repo_id, saved)
    (tmp_path / "hubconf.py").symlink_to(REPO / "hubconf.py")  # torch.hub.load(".", ...) "in the yyfast checkout"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"README section failed:\n{out.stderr[-3000:]}"
    assert "yynet_small_64" in out.stdout
