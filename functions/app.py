"""The Chalice application: the one object that Lambda runs and that `agistack dev` serves locally."""

from chalice import Chalice

app = Chalice(app_name="agistack-api")
