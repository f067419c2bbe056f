"""Tasks built on the MambaMixer layers: models, data and Lightning modules per task."""
