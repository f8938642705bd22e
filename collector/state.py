"""Typed keys for what the aiohttp application holds."""

from aiohttp import web

from collector.agents import AgentRegistry
from collector.alerts.alerts import Alerts
from collector.alerts.rules import AlertRules
from collector.analytics.equipment_store import EquipmentStore
from collector.api.auth import Authenticator
from collector.api.keys import ApiKeys
from collector.api.ratelimit import RateLimits
from collector.commands import Commands
from collector.config import CollectorConfig
from collector.event_hub import EventHub
from collector.metrics import CollectorMetrics
from collector.store import ReadingStore
from collector.webhooks import WebhookEndpoints
from shared.mqtt import MqttClient
from shared.supervisor import Supervisor

SETTINGS = web.AppKey("settings", CollectorConfig)
METRICS = web.AppKey("metrics", CollectorMetrics)
STORE = web.AppKey("store", ReadingStore)
AGENTS = web.AppKey("agents", AgentRegistry)
MQTT = web.AppKey("mqtt", MqttClient)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
KEYS = web.AppKey("keys", ApiKeys)
AUTH = web.AppKey("auth", Authenticator)
LIMITS = web.AppKey("limits", RateLimits)
EQUIPMENT = web.AppKey("equipment", EquipmentStore)
EVENT_HUB = web.AppKey("event_hub", EventHub)
WEBHOOKS = web.AppKey("webhooks", WebhookEndpoints)
ALERT_RULES = web.AppKey("alert_rules", AlertRules)
ALERTS = web.AppKey("alerts", Alerts)
COMMANDS = web.AppKey("commands", Commands)
