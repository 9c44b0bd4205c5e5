"""The monitor, served by the main process: the routes (``server``: /metrics, /health,
/api/status.json, /api/plugins.json, the tap), HTTP/1.1 on h11 (``http``), the Prometheus text
format (``exposition``), the tap (``tap``), and the client of ``hive-agent status`` and
``hive-agent tap`` (``client``)."""
