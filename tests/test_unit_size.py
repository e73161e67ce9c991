"""No function in ``yyfast/``, ``kernels/`` or ``bench/`` is over 80 lines unless its docstring says why
(a line with "Long because:"): a long unit is split into named steps, or states what a split would cost."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 80
MARKER = "Long because:"


def long_units(root: pathlib.Path = ROOT, max_lines: int = MAX_LINES):
    """``{"path:qualname": lines}`` of every function (nested and methods included) over ``max_lines``
    whose docstring lacks the marker."""
    found = {}
    for folder in ("yyfast", "kernels", "bench"):
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            stack = [(tree, "")]
            while stack:
                node, prefix = stack.pop()
                for child in ast.iter_child_nodes(node):
                    name = f"{prefix}{getattr(child, 'name', '')}"
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        lines = child.end_lineno - child.lineno + 1
                        if lines > max_lines and MARKER not in (ast.get_docstring(child) or ""):
                            found[f"{path.relative_to(root).as_posix()}:{name}"] = lines
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        stack.append((child, f"{name}."))
    return found


def test_no_long_unit_without_a_reason():
    found = long_units()
    assert not found, f"split these or give the reason in the docstring (\"{MARKER} ...\"):\n" + "\n".join(
        f"  {k}: {v} lines" for k, v in sorted(found.items()))


def test_finder_sees_long_and_explained_units(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "yyfast").mkdir()
    (tmp_path / "yyfast" / "m.py").write_text(
        f"def long():\n{body}\n\n\nclass C:\n    def explained(self):\n        '''{MARKER} one table.'''\n{body}\n\n\n"
        f"def short():\n    return 1\n")
    assert long_units(tmp_path) == {"yyfast/m.py:long": MAX_LINES + 1}
