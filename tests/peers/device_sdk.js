// Aliyun's Node.js device SDK (aliyun-iot-device-sdk): HTTPS dynamic registration with registerURL
// at the emulator, then its device-secret login and a publish.
// usage: NODE_EXTRA_CA_CERTS=ca.pem node device_sdk.js HTTPS_PORT MQTT_URL PK PS DN
"use strict";
const iot = require("aliyun-iot-device-sdk");

const [httpsPort, brokerUrl, productKey, productSecret, deviceName] = process.argv.slice(2);
setTimeout(() => fail("timed out"), 60000).unref();

function fail(why) {
  console.error("device_sdk: " + why);
  process.exit(1);
}

const registerURL = `https://127.0.0.1:${httpsPort}/auth/register/device`;
iot.register({ productKey, productSecret, deviceName, registerURL }, (res) => {
  if (!res || res.code !== 200) fail("register: " + JSON.stringify(res && (res.message || res)));
  const device = iot.device({
    productKey,
    deviceName,
    deviceSecret: res.data.deviceSecret,
    brokerUrl,
    tls: brokerUrl.startsWith("mqtts"),
  });
  device.on("error", (e) => fail("mqtt: " + e.message));
  device.on("connect", () => {
    const topic = `/${productKey}/${deviceName}/user/update`;
    device.publish(topic, JSON.stringify({ sdk: "aliyun-iot-device-sdk" }), { qos: 1 }, (err) => {
      if (err) fail("publish: " + err.message);
      console.log(JSON.stringify({ registered: res.data.deviceName, published: topic }));
      device.end(false, () => process.exit(0));
    });
  });
});
