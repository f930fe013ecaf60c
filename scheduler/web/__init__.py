"""The HTTP API, its pages and its routes, one module per concern; ``app.create_app`` wires them."""
