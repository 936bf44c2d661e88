"""Alert rules, alerts, retention interventions and their emails."""
