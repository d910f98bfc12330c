"""hatch's environments install with pip, which takes this index as README's pip section shows
(hatch publish is in test_clients_publish.py)."""

from __future__ import annotations

from clienttools import out, sh, tool_env

# The public stand-in needs no build backend: these tests build nothing through it.
BUILD_BACKENDS: list[str] = []


def test_hatch_environment_installs_from_the_index_in_pip_conf(indexes, trap, tmp_path):
    srv = indexes.private
    home = tmp_path / "home"
    conf = home / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[global]\nindex-url = {srv.url}/simple/\n")
    env = tool_env(home, trap)
    del env["PIP_CONFIG_FILE"]  # the user's own pip.conf, as README says
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "pbx-app"\nversion = "0.1.0"\n\n'
        "[tool.hatch.envs.default]\nskip-install = true\n"
        'dependencies = ["pbx-internal", "pbx-public-only"]\n')
    result = sh("hatch run python -c 'import pbx_internal, pbx_public_only; "
                "print(pbx_internal.__version__, pbx_public_only.__version__)'", project, env, trap)
    assert result.returncode == 0, out(result)
    assert result.stdout.strip().splitlines()[-1] == "1.0 1.0"  # the private one; the fallback
