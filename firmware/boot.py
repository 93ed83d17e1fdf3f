# boot.py: intentionally empty; main.py decides between safe mode and the application.
