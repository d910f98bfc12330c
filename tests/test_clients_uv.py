"""uv's one unsafe setting, as README's dependency-confusion table names it (uv's safe setups
are in test_clients_install.py)."""

from __future__ import annotations

from clienttools import installed_version, out, sh, tool_env

# The public stand-in needs no build backend: these tests build nothing through it.
BUILD_BACKENDS: list[str] = []


def test_uv_unsafe_best_match_lets_the_public_index_win(indexes, trap, tmp_path):
    public, srv = indexes.public, indexes.private
    env = tool_env(tmp_path / "home", trap)
    assert sh("uv venv -q .venv", tmp_path, env, trap).returncode == 0
    # uv asks an --extra-index-url before the --index-url, and stops at the first that has it.
    indexes_ = f"--index-url {public.url}/simple/ --extra-index-url {srv.url}/simple/"
    first = sh(f"uv pip install {indexes_} pbx-internal", tmp_path, env, trap)
    assert first.returncode == 0, out(first)
    assert installed_version(tmp_path / ".venv", "pbx_internal") == "1.0"
    unsafe = sh(f"uv pip install --reinstall --index-strategy unsafe-best-match {indexes_} "
                "pbx-internal", tmp_path, env, trap)
    assert unsafe.returncode == 0, out(unsafe)
    assert installed_version(tmp_path / ".venv", "pbx_internal") == "9.0"  # the attacker's
