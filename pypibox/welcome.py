"""The page shown at ``/``: how to upload to and install from this index."""

# A bottle SimpleTemplate; pypiserver fills in URL, SIMPLE, PACKAGES, NUMPKGS and VERSION.
WELCOME_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Private Python package index</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d2330; line-height: 1.5; }
pre { background: #f3f5f8; border: 1px solid #d9dee7; padding: .75rem 1rem; overflow-x: auto; }
code { font-family: ui-monospace, monospace; }
.count { font-size: 1.25rem; }
</style>
</head>
<body>
<h1>Private Python package index</h1>
<p class="count" id="count">This index holds <strong>{{NUMPKGS}}</strong> package files.</p>
<p>Browse the <a href="{{SIMPLE}}">simple index</a> or <a href="{{PACKAGES}}">all files</a>.</p>

<h2>Install from it</h2>
<p>Put this in <code>~/.config/pip/pip.conf</code>:</p>
<pre id="pipconf">[global]
extra-index-url = {{URL}}simple/</pre>
<p>or once: <code>pip install --index-url {{URL}}simple/ &lt;package&gt;</code></p>

<h2>Upload to it</h2>
<p>Put this in <code>~/.pypirc</code>:</p>
<pre id="pypirc">[distutils]
index-servers =
  local

[local]
repository = {{URL}}
username = &lt;username&gt;
password = &lt;password&gt;</pre>
<p>then <code>twine upload -r local dist/*</code>.</p>
<p><small>pypiserver {{VERSION}}</small></p>
</body>
</html>
"""
