import assert from "node:assert/strict";
import { sourceOf } from "./guard.ts";

Deno.test("guard: a source is an IPv4 address or an IPv6 /64", () => {
  assert.equal(sourceOf("192.0.2.7"), "192.0.2.7");
  assert.equal(sourceOf("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(sourceOf("[::ffff:c000:207]"), "192.0.2.7");
  assert.equal(sourceOf("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(sourceOf("2001:DB8:1:2::9"), "2001:db8:1:2::/64");
  assert.equal(sourceOf("2001:db8:1:2::/64"), "2001:db8:1:2::/64");
  assert.equal(sourceOf("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(sourceOf("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(sourceOf("::1"), "0:0:0:0::/64");
  assert.equal(sourceOf("not an address"), "not an address");
});
