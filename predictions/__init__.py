"""Model versions, training, churn scores and scoring runs."""
