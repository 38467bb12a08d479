"""MkDocs hook: docstrings name objects with Sphinx roles (``:class:`Phenotype```);
mkdocstrings renders the backticks as code and leaves the role, which this drops."""

import re

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html, **kwargs):
    return _ROLE.sub("", html)
