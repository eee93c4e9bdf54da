"""The one-command demo's own pieces: a traffic generator and the questions it asks.

``make up`` starts it beside the services (deploy/local/stack.sh), so the demo deployment has
users: a steady stream of questions, some streamed, some rated. docs/demo.md tells the story.
"""
