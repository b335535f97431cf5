"""Alerts: what an alert holds, how it reads (console, Discord embed), and how it is delivered.

Flow: the watcher builds an ``Alert`` (model.py) and queues ``alert.to_dict()`` in the store's
outbox; ``deliver_pending`` (delivery.py) claims queued alerts one at a time and hands each to a
sender (discord_webhook.py: Discord webhook, or the console).
"""
