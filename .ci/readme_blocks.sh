# Sourced by .ci/run and .ci/stacks.sh: the README's own install and test commands, so CI cannot
# drift from what README.md tells users to run.

# readme_block MARKER: print the first ```bash block after the line containing MARKER in README.md
readme_block() {
  awk -v marker="$1" '
    index($0, marker) { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' README.md
}

install_cmds="$(readme_block '<!-- ci:install -->')"
test_cmds="$(readme_block '<!-- ci:test -->')"
[ -n "$install_cmds" ] || { echo "ci: no <!-- ci:install --> block in README.md" >&2; exit 1; }
[ -n "$test_cmds" ] || { echo "ci: no <!-- ci:test --> block in README.md" >&2; exit 1; }
