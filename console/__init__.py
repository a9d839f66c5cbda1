"""The browser console's service: one MQTT connection for every person's browser, behind nginx."""
