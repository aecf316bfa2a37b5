"""The model: input schema, feature transformers, training, artifacts and the registry."""
