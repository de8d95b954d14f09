"""Wire protocols: one folder per protocol (pure ``protocol.py`` codec + asyncio ``server.py``).

``listen.py`` is the shared helper every server uses to open its UNIX or TCP socket, limit its
connections and name its peers in logs.
"""
