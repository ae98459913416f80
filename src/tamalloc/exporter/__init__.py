"""The Prometheus exporter, one module a concern:

- :mod:`.collector`: what a scrape reads and exports (``MemoryCollector``, the registry);
- :mod:`.server`: the bounded HTTP/1.1 server that answers scrapes;
- :mod:`.textfile`: the atomic textfile for node_exporter's textfile collector;
- :mod:`.service`: what a long-running exporter process needs (SIGTERM, open files).

Nothing is imported here: the ``tamalloc`` command reads the server's defaults at every
start, and the collector's prometheus_client would cost each command ~50 ms.
"""
