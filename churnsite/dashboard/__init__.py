"""The staff dashboard: risk, alerts, retention actions and the champion model on one page."""
