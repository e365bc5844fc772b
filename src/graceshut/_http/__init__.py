"""The HTTP edge: the drain middleware, the routes and the admin listener.

Also the responses they share, and ending the requests that still run at the deadline.
"""
