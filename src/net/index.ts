/** Connection admission shared by the listeners (HTTP, replication): per-address slots. */
export { AddressSlots, addressKey } from './address-slots.js';
