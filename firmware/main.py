# main.py: the active version (otaboot, docs/ota.md), then the application (safe mode and config
# are checked inside). Add sensors: app.main(sensors=callable).
import otaboot

otaboot.select()
del otaboot
__import__("gc").collect()  # the loader leaves no garbage among the app's first objects
try:
    from zeroburn import app

    app.main()
except Exception as e:  # on probation a crash goes back to the previous version (and resets)
    __import__("otaboot").done(e)
    raise
__import__("otaboot").done("returned without a cloud session")
