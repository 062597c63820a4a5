/**
 * Pool names: each pool is a registry of its own on the gateway (`idFromName(pool)`), chosen by clients with
 * X-Switchyard-Pool and by agents with --pool. Both sides check names with these rules, so an agent is
 * refused at start rather than at every connect.
 */
export const DEFAULT_POOL = "default";

const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** How a valid pool name looks, for error messages. */
export const POOL_NAME_RULE = "up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit";

export const isPoolName = (name: string): boolean => POOL_NAME.test(name);
