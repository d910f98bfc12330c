"""The page shown at ``/``: how to upload to and install from this index, with its own URLs."""

from __future__ import annotations

import html
import string

from . import __version__

# Filled in by render(): $URL (this server, ending in /), $NUMPKGS (files held), $VERSION,
# $AUTHURL (the index URL with a user and password in it) and $HOST; every value is escaped.
TEMPLATE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Private Python package index</title>
<style>
body { font-family: system-ui, sans-serif; font-size: 15px; max-width: 60rem; margin: 1rem auto;
       padding: 0 1rem; color: #1d2330; line-height: 1.4; }
h1 { margin: 0 0 .25rem; }
h2 { margin: 1rem 0 .5rem; border-bottom: 1px solid #d9dee7; }
p { margin: .4rem 0; }
pre { background: #f3f5f8; border: 1px solid #d9dee7; padding: .4rem .75rem; overflow-x: auto;
      margin: .3rem 0; }
code { font-family: ui-monospace, monospace; }
.count { font-size: 1.2rem; margin-top: 0; }
.urls td { padding: .1rem 1rem .1rem 0; }
.note { color: #4a5263; font-size: .95rem; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 0 1.5rem; }
</style>
</head>
<body>
<h1>Private Python package index</h1>
<p class="count" id="count">This index holds <strong id="numpkgs">$NUMPKGS</strong> package files.
Browse the <a href="${URL}simple/">simple index</a> or <a href="${URL}packages/">all files</a>.</p>
<table class="urls">
<tr><td>Install from (pip, uv)</td><td><code id="index-url">${URL}simple/</code></td></tr>
<tr><td>Upload to (twine, uv, hatch)</td><td><code id="upload-url">$URL</code></td></tr>
</table>

<h2>Install from it</h2>
<div class="cols">
<div>
<p>pip: put this in <code>~/.config/pip/pip.conf</code></p>
<pre id="pipconf">[global]
index-url = ${URL}simple/</pre>
</div>
<div>
<p>uv: put this in your project's <code>pyproject.toml</code></p>
<pre id="uvindex">[[tool.uv.index]]
name = "private"
url = "${URL}simple/"</pre>
</div>
</div>
<p>or once:</p>
<pre id="pip-once">pip install --index-url ${URL}simple/ &lt;package&gt;</pre>
<pre id="uv-once">uv pip install --index-url ${URL}simple/ &lt;package&gt;</pre>
<p class="note">Projects this index does not hold are sent on to the public index, unless the
administrator turned that off. Prefer <code>index-url</code> to <code>extra-index-url</code>: with
<code>extra-index-url</code> pip takes the highest version from any index, so a public package with
the name of a private one and a higher version would win.</p>
<p>If downloads need a password, give it in the URL:</p>
<pre id="pip-auth">pip install --index-url ${AUTHURL}simple/ &lt;package&gt;</pre>
<div class="cols">
<p>or in <code>~/.netrc</code>, which pip and uv read (then the URLs above need no password):</p>
<pre id="netrc">machine $HOST
login &lt;username&gt;
password &lt;password&gt;</pre>
</div>

<h2>Upload to it</h2>
<div class="cols">
<div>
<p>Put this in <code>~/.pypirc</code> (twine and <code>setup.py upload</code> read it):</p>
<p class="note">Each upload needs a user name and password of this index. A file that is
already here is refused: give each upload a new version.</p>
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
<p class="note"><small>pypibox $VERSION, on pypiserver $PYPISERVER</small></p>
</body>
</html>
""")


def render(url: str, files: int) -> bytes:
    """The front page for a server reached at ``url`` (ending in ``/``) holding ``files``."""
    import pypiserver

    host = url.split("/")[2].rsplit(":", 1)[0]
    values = {"URL": url, "NUMPKGS": str(files), "VERSION": __version__,
              "PYPISERVER": pypiserver.__version__, "HOST": host,
              "AUTHURL": url.replace("://", "://<username>:<password>@", 1)}
    return TEMPLATE.substitute({k: html.escape(v) for k, v in values.items()}).encode("utf-8")
