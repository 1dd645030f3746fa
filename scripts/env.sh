# Sourced by the project's scripts and shells: puts the project's .venv on PATH.
# bas sets the rest of its environment itself (bas/environment.py: Prefect, Hugging Face and DVC
# settings, before Prefect is imported); a shell that runs Prefect directly takes them with
#   eval "$(bas env)"
export PATH="$PWD/.venv/bin:$PATH"
