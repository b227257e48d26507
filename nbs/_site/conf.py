"Sphinx configuration of the documentation site: `python nbs/_site/build.py` (or `make docs`) runs it, offline."
import configparser
from pathlib import Path

_cfg = configparser.ConfigParser()
_cfg.read(Path(__file__).resolve().parents[2]/'settings.ini')
_cfg = _cfg['DEFAULT']

project = html_title = _cfg['title']
author, copyright = _cfg['author'], _cfg['copyright']
root_doc = 'index'
exclude_patterns = ['_*', '.*', '**/.ipynb_checkpoints']

# `sphinx-mathjax-offline` copies MathJax 3 into _static and points Sphinx at it: no CDN.
extensions = ['myst_nb', 'sphinx-mathjax-offline']
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'attrs_block', 'attrs_inline']
myst_all_links_external = True   # build.py has already turned links to notebooks into links to their pages
suppress_warnings = ['myst.header']   # show_doc headings may skip a level, as they do on nbdev's Quarto site
nb_execution_mode = 'off'             # the notebooks keep their outputs: render them, never re-run
nb_render_markdown_format = 'myst'    # markdown outputs may hold math
nb_merge_streams = True

html_theme = 'sphinx_book_theme'
html_theme_options = {'home_page_in_toc': True, 'show_toc_level': 2, 'use_download_button': False}
html_static_path = ['static']
html_css_files = ['site.css']
html_show_sourcelink = False
html_last_updated_fmt = None
