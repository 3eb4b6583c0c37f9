"""The HTTP face: the app factory, the server, the API and the review page."""
