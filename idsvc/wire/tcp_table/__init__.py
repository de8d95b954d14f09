"""The Postfix tcp_table server (``tcp:127.0.0.1:PORT``): ``protocol.py`` (pure codec) and
``server.py`` (asyncio). One map per listener (``tcp_table.map``)."""
