"""`aim-recipes`, the command line (main), including the Helm hook commands."""
