"""Framework-free machine learning for churn: snapshots, features, encoders and estimators.

Nothing in this package imports Django, Django REST framework, Celery or the project's apps.
"""
