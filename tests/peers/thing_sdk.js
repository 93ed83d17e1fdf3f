// Aliyun's Node.js device SDK (aliyun-iot-device-sdk) as a thing-model device: logs in with its
// deviceSecret and answers property set (onService("set"): the SDK keys a service by the last
// part of its method, thing.service.property.set), the service Blink (onService), and system
// RRPC (its mqtt.js "message" event, as Aliyun's RRPC guide does it). One JSON line per event on
// stdout: {"ready": [[topic, granted qos]]} once its subscriptions are answered, then
// {"call": ..., ...} per command handled. Ends when stdin closes.
// usage: NODE_EXTRA_CA_CERTS=ca.pem node thing_sdk.js MQTT_URL PK DN DEVICE_SECRET
"use strict";
const iot = require("aliyun-iot-device-sdk");

const [brokerUrl, productKey, deviceName, deviceSecret] = process.argv.slice(2);
setTimeout(() => fail("timed out"), 120000).unref();

function fail(why) {
  console.error("thing_sdk: " + why);
  process.exit(1);
}

function say(obj) {
  console.log(JSON.stringify(obj));
}

const sys = `/sys/${productKey}/${deviceName}`;
const device = iot.device({
  productKey,
  deviceName,
  deviceSecret,
  brokerUrl,
  tls: brokerUrl.startsWith("mqtts"),
});
device.on("error", (e) => fail("mqtt: " + e.message));

function answer(topic, res, data) {
  device.publish(topic, JSON.stringify({ id: res.id, code: 200, data }), { qos: 0 });
}

device.onService("set", (res) => {
  say({ call: "set", id: res.id, params: res.params });
  answer(`${sys}/thing/service/property/set_reply`, res, {});
});
device.onService("Blink", (res) => {
  say({ call: "Blink", id: res.id, params: res.params });
  answer(`${sys}/thing/service/Blink_reply`, res, { blinked: 2 * res.params.times });
});
device.on("message", (topic, payload) => {
  if (topic.startsWith(`${sys}/rrpc/request/`)) {
    say({ call: "rrpc", topic, payload: payload.toString() });
    device.publish(topic.replace("/rrpc/request/", "/rrpc/response/"), "pong:" + payload);
  }
});

device.on("connect", () => {
  // the SDK's own subscriptions (made on connect) are answered before this one, in order
  device.subscribe(`${sys}/rrpc/request/+`, { qos: 0 }, (err, granted) => {
    if (err) fail("subscribe: " + err.message);
    say({ ready: granted.map((g) => [g.topic, g.qos]) });
  });
});
process.stdin.on("end", () => device.end(false, () => process.exit(0)));
process.stdin.resume();
