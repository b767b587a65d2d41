"""The avatar in a browser: a self-contained WebGL2 page (``zero1toa view``) and a headless driver.

- :mod:`.page`: builds the page (template + script in this folder, the animated package
  embedded as base64, no network).
- :mod:`.browser`: drives headless Chromium over the DevTools protocol (a pipe, no port) for
  the tests and the benchmark: set exact cameras and expressions, take screenshots, time frames.
"""
