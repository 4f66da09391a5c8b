"""The language-model layer shared by the model-backed stages (ProX, leaner): backends,
the response cache in object storage, budgets, and one model per Ray actor."""
