"""Configuration modules, where upstream Metamapper keeps them (``metamapper.conf``)."""
