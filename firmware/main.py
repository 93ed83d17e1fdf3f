# main.py: safe-mode escape, then the application (add sensors: app.main(sensors=callable)).
from zeroburn import app

app.main()
