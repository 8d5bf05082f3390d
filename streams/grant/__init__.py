"""The grant stream: daily-login claims decided into awards, streaks and outcomes
(docs/design.md, "Grants"). ``policy`` (versions, amounts, seasons) and ``decide`` (the rule)
are pure and shared by the worker, replay and reconciliation."""
