# zeroburn firmware: self-registering Aliyun IoT device (regnwl, then connwl telemetry).
VERSION = "0.1.0"
