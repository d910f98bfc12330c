"""The page shown at ``/``: what this index holds, and how each client uses it safely."""

from __future__ import annotations

import html
import string
import typing as t
from urllib.parse import quote

from . import __version__

# Filled in by render(); every value is escaped. $URL is this server, ending in /.
TEMPLATE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Private Python package index</title>
<style>
body { font-family: system-ui, sans-serif; font-size: 15px; max-width: 62rem; margin: 1rem auto;
       padding: 0 1rem; color: #1d2330; line-height: 1.4; }
h1 { margin: 0 0 .25rem; }
h2 { margin: 1.2rem 0 .5rem; border-bottom: 1px solid #d9dee7; }
p { margin: .4rem 0; }
pre { background: #f3f5f8; border: 1px solid #d9dee7; padding: .4rem .75rem; overflow-x: auto;
      margin: .3rem 0; }
code { font-family: ui-monospace, monospace; }
.count { font-size: 1.2rem; margin-top: 0; }
.urls td { padding: .1rem 1rem .1rem 0; }
.note { color: #4a5263; font-size: .95rem; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 27rem), 1fr));
        gap: 0 1.5rem; }
.projects { columns: 14rem; padding-left: 1.2rem; }
form.search { display: flex; gap: .4rem; max-width: 30rem; margin: .5rem 0; }
form.search input { flex: 1; min-width: 0; padding: .3rem .5rem; font-size: 1rem; }
.auth { border-left: 4px solid #d9a400; padding: .2rem .8rem; background: #fff9e6; }
footer { color: #6b7385; font-size: .85rem; margin-top: 2rem; }
</style>
</head>
<body>
<h1>Private Python package index</h1>
<p class="count" id="count">This index holds <strong id="numpkgs">$NUMPKGS</strong> package files.
Projects: <strong id="numprojects">$NUMPROJECTS</strong>. Browse the
<a href="${URL}projects/">projects</a>, the <a href="${URL}simple/">simple index</a>
or <a href="${URL}packages/">all files</a>.</p>
<form class="search" action="${URL}projects/" method="get" role="search">
<input type="search" name="q" placeholder="Search names and summaries" aria-label="Search">
<button type="submit">Search</button></form>
$PROJECTS
<table class="urls">
<tr><td>Install from (pip, uv, poetry, pdm, pipenv)</td>
<td><code id="index-url">${URL}simple/</code></td></tr>
<tr><td>Upload to (twine, uv, poetry, pdm, hatch, flit)</td>
<td><code id="upload-url">$URL</code></td></tr>
</table>
<p class="auth" id="auth-note">$AUTHNOTE</p>

<h2>Install from it</h2>
<p class="note">Each setup below keeps the names this index holds on this index, so a public
project with the same name and a higher version is never installed instead (dependency
confusion). Names this index does not hold are $FALLBACK. Avoid pip's
<code>extra-index-url</code>, poetry's <code>supplemental</code> sources and pdm's second
sources without <code>include_packages</code>: each of them lets the highest version from
any index win.</p>
<div class="cols">
<div>
<p>pip: put this in <code>~/.config/pip/pip.conf</code></p>
<pre id="pipconf">[global]
index-url = ${URL}simple/</pre>
</div>
<div>
<p>uv: put this in your project's <code>pyproject.toml</code> (uv asks it first)</p>
<pre id="uvindex">[[tool.uv.index]]
name = "private"
url = "${URL}simple/"</pre>
</div>
<div>
<p>poetry: make it the primary source</p>
<pre id="poetry-source">poetry source add --priority=primary private ${URL}simple/</pre>
</div>
<div>
<p>pdm: name it <code>pypi</code> in <code>pyproject.toml</code>, so it replaces the public
index</p>
<pre id="pdm-source">[[tool.pdm.source]]
name = "pypi"
url = "${URL}simple/"</pre>
</div>
<div>
<p>pipenv: make it the Pipfile's only (or first) source</p>
<pre id="pipfile">[[source]]
name = "private"
url = "${URL}simple/"
verify_ssl = true</pre>
</div>
</div>
<p>or once:</p>
<pre id="pip-once">pip install --index-url ${URL}simple/ &lt;package&gt;</pre>
<pre id="uv-once">uv pip install --index-url ${URL}simple/ &lt;package&gt;</pre>
$PASSWORDS
<h2>Upload to it</h2>
<div class="cols">
<div>
<p>Put this in <code>~/.pypirc</code> (twine and <code>setup.py upload</code> read it):</p>
<p class="note">Each upload needs a user name and password of this index (or an API token,
with the user name <code>__token__</code>). A file that is already here is refused: give each
upload a new version.</p>
</div>
<pre id="pypirc">[distutils]
index-servers =
  local

[local]
repository = $URL
username = &lt;username&gt;
password = &lt;password&gt;</pre>
</div>
<p>then, from the folder holding <code>dist/</code>, one of:</p>
<pre id="twine">twine upload -r local dist/*</pre>
<pre id="uv-publish">uv publish --publish-url $URL --username &lt;username&gt; \
--password &lt;password&gt;</pre>
<pre id="hatch-publish">hatch publish -r $URL -u &lt;username&gt; -a &lt;password&gt; dist/*</pre>
<pre id="poetry-publish">poetry config repositories.private $URL
poetry publish --build -r private -u &lt;username&gt; -p &lt;password&gt;</pre>
<footer id="footer">pypibox $VERSION (a private package index built on pypiserver
$PYPISERVER), <a href="https://github.com/pypibox/pypibox">source and documentation</a>.
</footer>
</body>
</html>
""")

PASSWORDS = """<h2>With a password</h2>
<p>Give it in the URL:</p>
<pre id="pip-auth">pip install --index-url {authurl}simple/ &lt;package&gt;</pre>
<div class="cols">
<p>or in <code>~/.netrc</code>, which pip, uv, poetry and pdm read (then the URLs above need
no password):</p>
<pre id="netrc">machine {host}
login &lt;username&gt;
password &lt;password&gt;</pre>
</div>
"""


def render(url: str, files: int, projects: t.Sequence[tuple[str, str]], total: int,
           downloads_need_password: bool, fallback: str = "on") -> bytes:
    """The front page for a server reached at ``url`` (ending in ``/``).

    ``projects`` are (name, latest version) of the first projects, of ``total``.
    """
    import pypiserver

    host = url.split("/")[2].rsplit(":", 1)[0]
    esc = html.escape
    if projects:
        items = "".join(f'<li><a href="{esc(url)}project/{esc(quote(name))}/">{esc(name)}</a>'
                        f" {esc(version)}</li>" for name, version in projects)
        more = (f'<p><a href="{esc(url)}projects/">all {total} projects</a></p>'
                if total > len(projects) else "")
        listed = f'<ul class="projects" id="projects">{items}</ul>{more}'
    else:
        listed = '<p id="projects">No project yet: the first upload creates one.</p>'
    if downloads_need_password:
        note = ("This index needs a user name and password (or an API token) to list and "
                "download packages, not only to upload them.")
        passwords = PASSWORDS.format(authurl=esc(url.replace("://", "://<username>:<password>@",
                                                             1)), host=esc(host))
    else:
        note = ("Anyone who reaches this index may list and download its packages; uploads "
                "need a user name and password (or an API token).")
        passwords = ""
    fallbacks = {"on": "sent on to the public index",
                 "cache": "fetched from the public index and kept here",
                 "off": "not found (this index answers only for its own projects)"}
    values = {"URL": url, "NUMPKGS": str(files), "NUMPROJECTS": str(total),
              "VERSION": __version__, "PYPISERVER": pypiserver.__version__,
              "AUTHNOTE": note, "FALLBACK": fallbacks.get(fallback, fallbacks["on"])}
    page = TEMPLATE.substitute({k: esc(v) for k, v in values.items()},
                               PROJECTS=listed, PASSWORDS=passwords)
    return page.encode("utf-8")
