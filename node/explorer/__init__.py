"""The block explorer's pages: server-rendered HTML (``render``), inline SVG charts (``chart``),
one layout template and two small static files (CSS, vanilla JS). No build step, no CDN.

The router is ``node.api.explorer``; the data come from the REST API's own handlers.
"""
