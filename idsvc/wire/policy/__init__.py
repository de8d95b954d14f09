"""The Postfix SMTP access policy delegation server (``check_policy_service``): ``protocol.py``
(pure codec), ``rules.py`` (the decisions) and ``server.py`` (asyncio)."""
