"""The browser side of Tidings: the JS client (``web/client``) and the live dashboard (``web/dashboard``)."""
