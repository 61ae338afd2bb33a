-- forgets to return the app
local moonlet = require "moonlet"
moonlet.app{}
